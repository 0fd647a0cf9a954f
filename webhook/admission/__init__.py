"""The AdmissionReview protocol, no Flask, no sockets (controller-runtime's `pkg/webhook/admission`).

One concept a module:
* `wire`: the v1 wire types, the input limits, parsing (`parse_review`) and encoding.
* `responses`: response constructors and the warnings' form (prefix, length).
* `patch`: the JSONPatch from the object as received to the core's result.
* `handlers`: `mutate_review` and `validate_review`, with one failure path each (`failed_open`, ...).
"""
