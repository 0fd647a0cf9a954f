"""The Dockerfile, checked without a Docker engine.

Static checks on the parsed Dockerfile (stages, user, entry point, no HEALTHCHECK, no build tools in
the final stage, every COPY source exists and is in the build context), then its build stage replayed
on this machine: the build context as .dockerignore defines it is copied to a temporary directory,
the build stage's RUN runs there with the image paths (/wheels, /opt/kafka-expose) mapped to
temporary ones, and the installed entry point is run exactly as ENTRYPOINT + CMD would run it.
Needs PyPI (the wheel's dependencies); slow-ish (about a minute with a warm pip cache).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "python3-dev", "libc-dev", "cargo", "rustc")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages, each a list of (INSTRUCTION, arguments) with continuations joined."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                key, _, value = rest.partition("=")
                args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in stage.all("ENV"):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    return env


def _copy_sources(value: str) -> tuple[list[str], bool]:
    parts = shlex.split(value)
    from_stage = any(p.startswith("--from=") for p in parts)
    parts = [p for p in parts if not p.startswith("--")]
    return parts[:-1], from_stage


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a pattern matches its subtree."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        pat = pat.replace("**/", "*")
        if fnmatch.fnmatchcase(path, pat) or path.startswith(pat + "/"):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def test_multi_stage_from_a_slim_python_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    final = stages[-1]
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", final.base), final.base
    assert stages[0].name, "the build stage is named so the final stage can COPY --from it"


def test_no_healthcheck(stages: list[Stage]) -> None:
    assert not [s for s in stages if s.all("HEALTHCHECK")]


def test_runs_as_a_numeric_non_root_user_that_exists(stages: list[Stage]) -> None:
    final = stages[-1]
    users = final.all("USER")
    assert users, "the final stage sets USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0
    assert not group or (group.isdigit() and int(group) != 0)
    run = " ".join(final.all("RUN"))
    assert re.search(rf"useradd\b[^&]*--uid {user}\b", run), "the numeric user exists in /etc/passwd"
    if group:
        assert re.search(rf"groupadd\b[^&]*--gid {group}\b", run)


def test_entry_point_is_kafka_expose(stages: list[Stage]) -> None:
    final = stages[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["kafka-expose"]
    assert "/opt/kafka-expose/bin" in _env(final)["PATH"].split(":")[0]


def test_final_stage_has_no_build_tools_and_installs_only_the_built_virtualenv(stages: list[Stage]) -> None:
    final = stages[-1]
    run = " ".join(final.all("RUN"))
    for tool in BUILD_TOOLS:
        assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", run), tool
    assert "apt-get install" not in run and "pip install" not in run
    for value in final.all("COPY") + final.all("ADD"):
        _sources, from_stage = _copy_sources(value)
        assert from_stage, f"the final stage copies only from the build stage: COPY {value}"


def test_copy_sources_exist_and_are_in_the_build_context(stages: list[Stage]) -> None:
    patterns = _dockerignore()
    for stage in stages:
        for value in stage.all("COPY"):
            sources, from_stage = _copy_sources(value)
            if from_stage:
                continue
            for source in sources:
                assert (REPO / source).exists(), f"COPY source {source} missing from the repository"
                assert not _ignored(source.rstrip("/"), patterns), f"{source} is excluded by .dockerignore"
    assert _ignored("tests/unit/install/test_dockerfile.py", patterns)
    assert _ignored(".git/config", patterns)
    assert not _ignored("webhook/cli/__init__.py", patterns)


def _build_context(dest: Path) -> None:
    patterns = _dockerignore()
    for path in sorted(REPO.rglob("*")):
        rel = path.relative_to(REPO).as_posix()
        if path.is_file() and not _ignored(rel, patterns):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


@pytest.fixture(scope="module")
def image_venv(stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Replay the build stage: context copy, the RUN with image paths mapped to temporary ones."""
    root = tmp_path_factory.mktemp("image")
    build = stages[0]
    assert build.all("WORKDIR")[-1] == "/src"  # the context copy stands for /src
    context = root / "context"
    _build_context(context)
    mapping = {
        "/wheels": str(root / "wheels"),
        "/opt/kafka-expose": str(root / "opt" / "kafka-expose"),
        "/opt/build": str(root / "opt" / "build"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update({k: v for k, v in _env(build).items() if k != "PIP_NO_CACHE_DIR"})  # keep pip's cache
    for command in build.all("RUN"):
        for image_path, local_path in mapping.items():
            command = command.replace(image_path, local_path)
        # `python` is the base image's interpreter: ours, same minor version.
        command = re.sub(r"(?<![\w/])python(?= -m)", shlex.quote(sys.executable), command)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, f"RUN {command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    venv = Path(mapping["/opt/kafka-expose"])
    assert (venv / "bin" / "kafka-expose").is_file()
    return venv


def _run_image(
    stages: list[Stage], venv: Path, args: list[str] | None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """ENTRYPOINT + (args or CMD), with the final stage's ENV and PATH pointing into the venv."""
    final = stages[-1]
    entry = json.loads(final.all("ENTRYPOINT")[-1])
    cmd = json.loads(final.all("CMD")[-1]) if args is None else args
    env = {"HOME": "/nonexistent", "LANG": "C.UTF-8"}
    for key, value in _env(final).items():
        env[key] = value.replace("/opt/kafka-expose", str(venv)).replace("$PATH", "/usr/bin:/bin")
    executable = shutil.which(entry[0], path=env["PATH"])
    assert executable == str(venv / "bin" / entry[0])
    return subprocess.run(
        [executable, *entry[1:], *cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_entry_point_help_runs_from_the_installed_wheel(
    stages: list[Stage], image_venv: Path, tmp_path: Path
) -> None:
    result = _run_image(stages, image_venv, None, tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "controller", "certs", "render", "check", "explain"):
        assert command in result.stdout


def test_every_sub_command_imports_with_the_declared_dependencies(image_venv: Path, tmp_path: Path) -> None:
    """`--help` builds every sub-parser; `run` imports more. Import each module's run dependencies."""
    code = (
        "import importlib, webhook, webhook.cli as c\n"
        "assert 'site-packages' in webhook.__file__, webhook.__file__\n"
        "for m, _ in c.COMMANDS.values(): importlib.import_module(m)\n"
        "import webhook.server.app, webhook.tls.selfmanaged, webhook.server.gunicorn, kubernetes, flask, gunicorn\n"
    )
    result = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", code],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_entry_point_certs_generate(stages: list[Stage], image_venv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "certs",
        "generate",
        "--service",
        "kafka-expose",
        "--namespace",
        "kafka-expose",
        "--out",
        str(out),
    ]
    result = _run_image(stages, image_venv, args, tmp_path)
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kafka-expose.kafka-expose.svc" in san.get_values_for_type(x509.DNSName)
    assert {p.name for p in out.iterdir()} == {"ca.crt", "ca.key", "tls.crt", "tls.key"}


def test_no_compiler_needed_pip_removed_from_the_runtime_venv(image_venv: Path) -> None:
    assert not (image_venv / "bin" / "pip").exists()
    site = next((image_venv / "lib").glob("python3.*/site-packages"))
    assert not list(site.glob("pip-*.dist-info"))


LOCKS = ("requirements.lock", "requirements-build.lock", "requirements-test.lock")


@pytest.mark.parametrize("lock", LOCKS)
def test_locks_pin_every_package_by_hash_and_name_no_local_path(lock: str) -> None:
    text = (REPO / lock).read_text()
    requirements = [line for line in text.splitlines() if line and not line[0].isspace() and line[0] != "#"]
    assert requirements, f"{lock} pins nothing"
    for line in requirements:
        assert not line.startswith(("-f", "--find-links", "-e", "--index-url", "--extra-index-url")), line
        assert re.match(r"^[A-Za-z0-9_.-]+==[^ ]+ \\$", line), f"{lock}: not pinned with hashes: {line}"
        assert "file:" not in line and "/" not in line.split("==")[0], line
    assert text.count("--hash=sha256:") >= len(requirements)


def test_image_installs_only_from_the_hashed_locks(stages: list[Stage]) -> None:
    commands = " ".join(stages[0].all("RUN"))
    installs = [part.strip() for part in commands.split("&&") if " install " in part]
    assert installs, "the build stage installs nothing"
    for install in installs:
        if "--no-deps" in install:  # the project's own wheel, built just before, nothing resolved
            assert "--no-index" in install and "/wheels/" in install, install
            continue
        assert "--require-hashes" in install and re.search(r"-r requirements(-build)?\.lock", install), (
            install
        )
    assert "--no-build-isolation" in commands  # else pip would fetch unpinned setuptools to build
