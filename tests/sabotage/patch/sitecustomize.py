# Loaded by every Python process, so also by the webhook server: break the runtime edit.
import webhook.core.runtime as r

r.FILE_SCRIPT = "true"
r.ENV_SCRIPT = "true"
