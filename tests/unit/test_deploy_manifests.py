"""The Kubernetes manifests and the Containerfile hold together, read statically.

No cluster and no image here: each manifest parses and is of its kind; the
Job is Indexed and tells its pods how many shards there are; a deleted pod has
time to abort its own leases; every Secret, ConfigMap and claim the Job names
exists with the keys it reads; the container's command line is one the CLI's
own parser takes; and the Containerfile is made of known instructions and runs
the console script that pyproject.toml declares.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from asyncovf.cli.parser import build_parser
from asyncovf.cli.run import COMPLETION_INDEX, SHARD_COUNT, shard_option
from asyncovf.engine.plan import load_batch
from asyncovf.vsphere.cleanup import INTERRUPT_BUDGET
from asyncovf.vsphere.connection import (
    CA_FILE_VARIABLES,
    PASSWORD_VARIABLES,
    SERVER_VARIABLES,
    USER_VARIABLES,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
CONTAINERFILE = ROOT / "Containerfile"

#: Each manifest and the kinds of its documents.
KINDS = {
    "job.yaml": ["Job"],
    "secret.yaml": ["Secret"],
    "configmap.yaml": ["ConfigMap"],
    "reports-pvc.yaml": ["PersistentVolumeClaim"],
}

#: Every instruction a Dockerfile (or Containerfile) may hold.
INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
})


def documents(name: str) -> list[dict[str, Any]]:
    with (DEPLOY / name).open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def manifest(name: str) -> dict[str, Any]:
    (document,) = documents(name)
    return document


def job() -> dict[str, Any]:
    return manifest("job.yaml")


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = job()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    assert only["name"] == "asyncovf"
    return dict(only)


def env_entries() -> dict[str, dict[str, Any]]:
    entries = container()["env"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), "a variable is set twice"
    return {entry["name"]: entry for entry in entries}


def substituted(words: list[str], values: dict[str, str]) -> list[str]:
    """Kubernetes' ``$(VAR)`` expansion of command and args (``$$`` escapes a ``$``)."""
    def expand(word: str) -> str:
        return re.sub(r"\$\$|\$\((\w+)\)",
                      lambda m: "$" if m.group(0) == "$$" else values[m.group(1)], word)
    return [expand(word) for word in words]


# -- the manifests ----------------------------------------------------------------------------

def test_every_manifest_parses_and_is_of_its_kind() -> None:
    assert sorted(path.name for path in DEPLOY.iterdir()) == sorted(KINDS)
    for name, kinds in KINDS.items():
        docs = documents(name)
        assert [doc["kind"] for doc in docs] == kinds, name
        for doc in docs:
            assert doc["apiVersion"] == ("batch/v1" if doc["kind"] == "Job" else "v1"), name
            assert doc["metadata"]["name"].startswith("asyncovf-"), name


def test_the_job_is_indexed_and_tells_each_pod_how_many_shards_there_are() -> None:
    spec = job()["spec"]
    assert spec["completionMode"] == "Indexed"
    completions = spec["completions"]
    assert isinstance(completions, int) and completions >= 1
    assert 1 <= spec["parallelism"] <= completions
    env = env_entries()
    assert env[SHARD_COUNT]["value"] == str(completions)
    # Kubernetes sets the index itself; declared, it must be the annotation it comes from.
    index = env[COMPLETION_INDEX]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    # Each index is one shard, and together they are every shard once.
    shards = [shard_option("auto", {COMPLETION_INDEX: str(i), SHARD_COUNT: env[SHARD_COUNT][
        "value"]}) for i in range(completions)]
    assert shards == [(k, completions) for k in range(1, completions + 1)]


def test_a_failed_shard_is_retried_alone_by_a_new_pod() -> None:
    spec = job()["spec"]
    assert spec.get("backoffLimitPerIndex", spec.get("backoffLimit", 0)) >= 1
    # backoffLimitPerIndex and podFailurePolicy need a new pod for each attempt.
    assert pod_spec()["restartPolicy"] == "Never"
    rules = spec.get("podFailurePolicy", {}).get("rules", [])
    for rule in rules:
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == "asyncovf"
        if rule["action"] == "FailIndex":
            assert "backoffLimitPerIndex" in spec
    # Exit 2 (input refused) fails its index at once: a retry would be refused too.
    refused = [rule for rule in rules if 2 in rule.get("onExitCodes", {}).get("values", [])]
    assert [rule["action"] for rule in refused] in ([], ["FailIndex"], ["FailJob"])


def test_a_deleted_pod_has_time_to_abort_its_own_leases() -> None:
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace > INTERRUPT_BUDGET
    # The comment beside it says which bound it exceeds, and by how much.
    text = (DEPLOY / "job.yaml").read_text(encoding="utf-8")
    assert f"INTERRUPT_BUDGET = {INTERRUPT_BUDGET:g} s" in text
    assert f"{grace} s exceeds that bound by {grace - INTERRUPT_BUDGET:g} s" in text


def test_every_secret_configmap_and_claim_the_job_names_exists_with_its_keys() -> None:
    secret, configmap = manifest("secret.yaml"), manifest("configmap.yaml")
    claim = manifest("reports-pvc.yaml")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}

    for entry in env_entries().values():
        reference = entry.get("valueFrom", {}).get("secretKeyRef")
        if reference is not None:
            assert reference["name"] == secret["metadata"]["name"]
            assert reference["key"] in secret_keys
    for volume in volumes.values():
        if "secret" in volume:
            assert volume["secret"]["secretName"] == secret["metadata"]["name"]
            assert {item["key"] for item in volume["secret"].get("items", [])} <= secret_keys
        if "configMap" in volume:
            assert volume["configMap"]["name"] == configmap["metadata"]["name"]
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    kinds = {kind for volume in volumes.values() for kind in volume if kind != "name"}
    assert {"secret", "configMap", "persistentVolumeClaim"} <= kinds
    for mount in container()["volumeMounts"]:
        assert mount["name"] in volumes, mount


def test_the_credentials_come_from_variables_the_tool_reads() -> None:
    env = env_entries()
    for variables in (SERVER_VARIABLES, USER_VARIABLES, PASSWORD_VARIABLES):
        (name,) = [name for name in variables if name in env]
        assert "secretKeyRef" in env[name]["valueFrom"], f"{name} must come from the Secret"
    # The CA file is where the Secret's key is mounted.
    (ca,) = [name for name in CA_FILE_VARIABLES if name in env]
    assert mounted_file(PurePosixPath(env[ca]["value"])) == ("secret", "ca.pem")


def mounted_file(path: PurePosixPath) -> tuple[str, str]:
    """(the kind of volume, the key) a file of the container comes from."""
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}
    for mount in container()["volumeMounts"]:
        if path.parent == PurePosixPath(mount["mountPath"]):
            volume = volumes[mount["name"]]
            kind = next(kind for kind in volume if kind != "name")
            items = {item["path"]: item["key"] for item in volume[kind].get("items", [])}
            return kind, items.get(path.name, path.name)
    raise AssertionError(f"{path} is on no volume")


def test_the_container_command_line_is_one_the_cli_parser_takes(
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = container()
    assert spec.get("command") in (None, ["asyncovf"]), "the image's ENTRYPOINT runs asyncovf"
    declared = set(env_entries())
    words = spec["args"]
    used = {name for word in words for name in re.findall(r"\$\((\w+)\)", word)}
    assert used <= declared, f"$(VAR) of no env entry: {used - declared}"
    argv = substituted(words, {COMPLETION_INDEX: "2", SHARD_COUNT: "3"})
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"asyncovf rejects the Job's command line: {capsys.readouterr().err}")
    assert args.command == "run"
    assert args.shard == "auto"
    assert args.on_conflict == "skip", "a restarted pod must resume its shard"
    # The batch comes from the ConfigMap, the report goes to the claim, one per index.
    assert mounted_file(PurePosixPath(args.batch)) == ("configMap", "batch.yaml")
    assert mounted_file(PurePosixPath(args.report))[0] == "persistentVolumeClaim"
    assert PurePosixPath(args.report).name == "shard-2.json"


def test_the_configmaps_batch_file_is_a_valid_batch(tmp_path: Path) -> None:
    data = manifest("configmap.yaml")["data"]
    batch = tmp_path / "batch.yaml"
    batch.write_text(data["batch.yaml"], encoding="utf-8")
    plan = load_batch(batch)
    completions = job()["spec"]["completions"]
    assert len(plan.jobs) >= completions, "every shard of the example has a VM to import"


def test_the_reports_volume_can_be_shared_by_pods_on_several_nodes() -> None:
    assert manifest("reports-pvc.yaml")["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {mount["name"]: mount for mount in container()["volumeMounts"]}
    claim_volume = next(volume["name"] for volume in pod_spec()["volumes"]
                        if "persistentVolumeClaim" in volume)
    assert not mounts[claim_volume].get("readOnly", False)


# -- the Containerfile ------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments and blank lines dropped, a line
    ending in a backslash joined with the next (comment lines inside one skipped,
    as Docker does)."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        found.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Containerfile ends inside a continued line"
    return found


def test_the_instruction_reader_joins_continued_lines() -> None:
    assert instructions("# c\nFROM x AS y\nRUN a \\\n  # inside\n  && b\n\nuser 1\n") == [
        ("FROM", "x AS y"), ("RUN", "a  && b"), ("USER", "1")]


def test_the_containerfile_is_made_of_known_instructions() -> None:
    found = instructions(CONTAINERFILE.read_text(encoding="utf-8"))
    unknown = [keyword for keyword, _ in found if keyword not in INSTRUCTIONS]
    assert not unknown
    assert found[0][0] in ("FROM", "ARG")
    assert all(arguments for _, arguments in found), "an instruction without arguments"


def final_stage() -> list[tuple[str, str]]:
    found = instructions(CONTAINERFILE.read_text(encoding="utf-8"))
    last = max(i for i, (keyword, _) in enumerate(found) if keyword == "FROM")
    return found[last:]


def test_the_image_runs_the_console_script_as_a_user_that_is_not_root() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["scripts"]
    stage = dict(final_stage())  # the last of each instruction is the one in force
    entrypoint = json.loads(stage["ENTRYPOINT"])  # the exec form: SIGTERM reaches asyncovf
    assert entrypoint == [next(iter(scripts))] and entrypoint[0] in scripts
    if "CMD" in stage:
        assert isinstance(json.loads(stage["CMD"]), list)
    user = stage["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert user == str(pod_spec()["securityContext"]["runAsUser"])


def test_the_image_installs_the_package_from_this_checkout() -> None:
    found = instructions(CONTAINERFILE.read_text(encoding="utf-8"))
    copied = [arguments.split()[:-1] for keyword, arguments in found
              if keyword == "COPY" and not arguments.startswith("--from")]
    sources = {source.rstrip("/") for words in copied for source in words}
    assert {"pyproject.toml", "README.md", "asyncovf"} <= sources  # README: the package's readme
    assert any(keyword == "RUN" and "pip" in arguments and ("install" in arguments
                                                            or "wheel" in arguments)
               for keyword, arguments in found)
    # The build context lets each of them in.
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    if "*" in ignore:
        assert all(f"!{source}" in ignore or f"!{source}/" in ignore for source in sources)


# -- the README -------------------------------------------------------------------------------

def test_the_readme_section_says_what_the_manifests_hold() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Running as a Kubernetes Indexed Job"):]
    section = section[:section.index("\n## ")]
    for name in KINDS:
        assert f"deploy/kubernetes/{name}" in section
    spec = job()["spec"]
    assert f"`asyncovf {' '.join(container()['args'])}`" in section
    assert f"`completions: {spec['completions']}`" in section
    assert f"`parallelism: {spec['parallelism']}`" in section
    assert f'`{SHARD_COUNT}: "{env_entries()[SHARD_COUNT]["value"]}"`' in section
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert f"`terminationGracePeriodSeconds: {grace}`" in section
    assert f"within {INTERRUPT_BUDGET:g} s" in section
    assert f"gives it {grace - INTERRUPT_BUDGET:g} s beyond that bound" in section


def test_the_pods_metrics_port_is_the_one_the_run_serves_and_the_image_can_serve_it() -> None:
    args = build_parser().parse_args(
        substituted(container()["args"], {COMPLETION_INDEX: "0", SHARD_COUNT: "3"}))
    assert args.metrics_port is not None, "the Job's pods serve their metrics"
    _, port = args.metrics_port
    (declared,) = [p for p in container()["ports"] if p["name"] == "metrics"]
    assert declared["containerPort"] == port
    annotations = job()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    # The linger outlasts a scrape, within the pod's grace period for a SIGTERM's cleanup.
    assert 0 < args.metrics_linger < pod_spec()["terminationGracePeriodSeconds"]
    stage = final_stage()
    installs = " ".join(arguments for keyword, arguments in stage if keyword == "RUN")
    assert re.search(r"\[[^]]*\bmetrics\b[^]]*\]", installs), "the image lacks asyncovf[metrics]"
    assert str(port) in [arguments for keyword, arguments in stage if keyword == "EXPOSE"]
