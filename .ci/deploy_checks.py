"""Checks of deploy/ that schemas cannot make: shape, references, and ringway's flags.

Run by .ci/validate-deploy.sh (in its venv, which has PyYAML):

    python .ci/deploy_checks.py --bin-dir target/debug deploy/**/*.yaml

Prints one line per problem and exits 1 if there is any.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import yaml

WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}
IO_URING = {"io_uring_setup", "io_uring_enter", "io_uring_register"}
problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def load(paths):
    docs = []
    for path in paths:
        with open(path) as f:
            try:
                for doc in yaml.safe_load_all(f):
                    if doc is not None:
                        docs.append((path, doc))
            except yaml.YAMLError as e:
                problem(path, f"YAML does not parse: {e}")
    return docs


def name_of(doc):
    return (doc.get("metadata") or {}).get("name", "?")


def check_shape(docs):
    for path, doc in docs:
        where = f"{path} {doc.get('kind', '?')}/{name_of(doc)}"
        for field in ("apiVersion", "kind"):
            if not doc.get(field):
                problem(where, f"no {field}")
        meta = doc.get("metadata") or {}
        if not meta.get("name"):
            problem(where, "no metadata.name")
        if not meta.get("labels"):
            problem(where, "no metadata.labels")


class Pod:
    """A workload's pod template: where it is, its labels, its containers."""

    def __init__(self, path, doc):
        self.path = path
        self.kind = doc["kind"]
        self.name = name_of(doc)
        self.namespace = (doc.get("metadata") or {}).get("namespace", "")
        template = doc["spec"]["template"]
        self.labels = (template.get("metadata") or {}).get("labels") or {}
        spec = template["spec"]
        self.spec = spec
        self.containers = spec.get("initContainers", []) + spec.get("containers", [])
        self.port_names = {
            p["name"]: p["containerPort"]
            for c in self.containers
            for p in c.get("ports", [])
            if "name" in p
        }

    def selected_by(self, selector, namespace):
        return (
            bool(selector)
            and namespace == self.namespace
            and all(self.labels.get(k) == v for k, v in selector.items())
        )


def check_references(docs):
    pods = [Pod(path, doc) for path, doc in docs if doc.get("kind") in WORKLOADS]
    by_kind = {}
    for path, doc in docs:
        key = (doc.get("kind"), (doc.get("metadata") or {}).get("namespace", ""), name_of(doc))
        by_kind[key] = (path, doc)

    def exists(kind, namespace, name):
        return (kind, namespace, name) in by_kind

    for pod in pods:
        where = f"{pod.path} {pod.kind}/{pod.name}"
        for c in pod.containers:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                handler = c.get(probe) or {}
                for kind in ("httpGet", "tcpSocket", "grpc"):
                    port = (handler.get(kind) or {}).get("port")
                    if isinstance(port, str) and port not in pod.port_names:
                        problem(where, f"{c['name']} {probe} uses port name {port!r}, not declared")
        volumes = {v["name"] for v in pod.spec.get("volumes", [])}
        for c in pod.containers:
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problem(where, f"{c['name']} mounts volume {mount['name']!r}, not declared")
            check_file_flags(where, c)
        profile = (pod.spec.get("securityContext") or {}).get("seccompProfile") or {}
        if profile.get("type") == "Localhost":
            local = os.path.join("deploy/seccomp", os.path.basename(profile["localhostProfile"]))
            if not os.path.exists(local):
                problem(where, f"Localhost seccomp profile {local} is not in deploy/seccomp")

    for path, doc in docs:
        kind = doc.get("kind")
        ns = (doc.get("metadata") or {}).get("namespace", "")
        where = f"{path} {kind}/{name_of(doc)}"
        spec = doc.get("spec") or {}
        if kind == "Service":
            selector = spec.get("selector") or {}
            matched = [p for p in pods if p.selected_by(selector, ns)]
            if not matched:
                problem(where, f"selector {selector} matches no pod template in deploy/")
            for port in spec.get("ports", []):
                target = port.get("targetPort")
                if isinstance(target, str) and not any(target in p.port_names for p in matched):
                    problem(where, f"targetPort {target!r} is no container port name of its pods")
            annotation = (doc["metadata"].get("annotations") or {}).get(
                "cloud.google.com/backend-config"
            )
            if annotation:
                for config in json.loads(annotation).values():
                    if not exists("BackendConfig", ns, config):
                        problem(where, f"backend-config {config!r} not in deploy/")
        elif kind == "PodDisruptionBudget":
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            if not any(p.selected_by(selector, ns) for p in pods):
                problem(where, f"selector {selector} matches no pod template")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            if not exists(ref["kind"], ns, ref["name"]):
                problem(where, f"scaleTargetRef {ref['kind']}/{ref['name']} not in deploy/")
        elif kind == "HTTPRoute":
            for parent in spec.get("parentRefs", []):
                if not exists(parent.get("kind", "Gateway"), ns, parent["name"]):
                    problem(where, f"parentRef {parent['name']} not in deploy/")
            for rule in spec.get("rules", []):
                for ref in rule.get("backendRefs", []):
                    service_port(where, by_kind, ns, ref["name"], ref.get("port"))
        elif kind == "Ingress":
            for rule in spec.get("rules", []):
                for p in (rule.get("http") or {}).get("paths", []):
                    svc = p["backend"]["service"]
                    service_port(where, by_kind, ns, svc["name"], svc["port"].get("number"))
        elif kind == "Certificate":
            # cert-manager writes spec.secretName; some pod must mount that Secret to serve it.
            secret = spec.get("secretName")
            mounted = {
                (v.get("secret") or {}).get("secretName")
                for p in pods
                if p.namespace == ns
                for v in p.spec.get("volumes", [])
            }
            if secret not in mounted:
                problem(where, f"secretName {secret!r} is mounted by no pod template in deploy/")
        elif kind in ("HealthCheckPolicy", "GCPBackendPolicy"):
            ref = spec.get("targetRef") or {}
            if not exists(ref.get("kind"), ns, ref.get("name")):
                problem(where, f"targetRef {ref.get('kind')}/{ref.get('name')} not in deploy/")
    return pods


# ringway flags that name a file the container reads: it must be under one of its mounts.
FILE_FLAGS = ("--tls-cert-file", "--tls-key-file")


def check_file_flags(where, container):
    mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
    for token in container.get("args") or []:
        flag, _, path = token.partition("=")
        if flag in FILE_FLAGS and not any(path.startswith(m) for m in mounts):
            problem(where, f"{container['name']} {flag}={path} is under no volumeMount")


def service_port(where, by_kind, ns, name, port):
    found = by_kind.get(("Service", ns, name))
    if not found:
        problem(where, f"backend Service {name!r} not in deploy/")
    elif port is not None and port not in [p["port"] for p in found[1]["spec"].get("ports", [])]:
        problem(where, f"backend Service {name!r} has no port {port}")


def check_seccomp():
    for entry in sorted(os.listdir("deploy/seccomp")):
        if not entry.endswith(".json"):
            continue
        path = os.path.join("deploy/seccomp", entry)
        try:
            with open(path) as f:
                profile = json.load(f)
        except ValueError as e:
            problem(path, f"not JSON: {e}")
            continue
        if profile.get("defaultAction") not in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS"):
            problem(path, "defaultAction is not a deny action")
        allowed = {
            n
            for s in profile.get("syscalls", [])
            if s.get("action") == "SCMP_ACT_ALLOW" and not s.get("args")
            for n in s.get("names", [])
        }
        if not IO_URING <= allowed:
            problem(path, f"does not allow {sorted(IO_URING - allowed)}")


# --- flags --------------------------------------------------------------------------------


def help_text(binary, *args):
    out = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, check=True)
    return out.stdout


def known(help_output):
    """The long flags and environment variables a clap --help lists."""
    flags = set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9][a-z0-9-]*)", help_output, re.M))
    envs = set(re.findall(r"\[env: ([A-Z0-9_]+)=", help_output))
    return flags, envs


class Binaries:
    def __init__(self, bin_dir):
        self.bin_dir = bin_dir
        self.cache = {}

    def known(self, binary, subcommand=None):
        key = (binary, subcommand)
        if key not in self.cache:
            args = [subcommand] if subcommand else []
            self.cache[key] = known(help_text(os.path.join(self.bin_dir, binary), *args))
        return self.cache[key]


def container_binary(container):
    command = container.get("command") or []
    if command:
        name = os.path.basename(command[0])
        return name if name in ("ringway", "ringway-load") else None
    # No command: the image's ENTRYPOINT, which is ringway in the project's image.
    return "ringway" if "ringway" in container.get("image", "") else None


def used_flags(tokens):
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--") and t != "--"]


def check_flags(pods, binaries, missing):
    for pod in pods:
        for c in pod.containers:
            binary = container_binary(c)
            if binary is None:
                continue
            tokens = (c.get("command") or [])[1:] + (c.get("args") or [])
            subcommand = None
            if binary == "ringway-load":
                subcommand = next((t for t in tokens if not t.startswith("-")), None)
            flags, envs = binaries.known(binary, subcommand)
            program = f"{binary} {subcommand}" if subcommand else binary
            where = f"{pod.path} {pod.kind}/{pod.name} container {c['name']}"
            for flag in used_flags(tokens):
                if flag not in flags:
                    missing.append((flag, program, where))
            for env in c.get("env", []):
                if env["name"].startswith("RINGWAY_") and env["name"] not in envs:
                    missing.append((env["name"], program, where))


def check_dockerfile_cmd(binaries, missing):
    with open("Dockerfile") as f:
        for line in f:
            if line.startswith("CMD "):
                flags, _ = binaries.known("ringway")
                for flag in used_flags(json.loads(line[4:])):
                    if flag not in flags:
                        missing.append((flag, "ringway", "Dockerfile CMD"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("manifests", nargs="+")
    args = parser.parse_args()

    docs = load(args.manifests)
    check_shape(docs)
    pods = check_references(docs)
    check_seccomp()
    print(f"shape and references: {len(docs)} documents, {len(pods)} pod templates, "
          f"{len(problems)} problems")

    binaries = Binaries(args.bin_dir)
    missing = []
    check_flags(pods, binaries, missing)
    check_dockerfile_cmd(binaries, missing)
    used = len({(m[0], m[1]) for m in missing})
    for flag, program, where in missing:
        problem(where, f"{flag} is not a flag or environment variable of `{program} --help`")
    if missing:
        names = sorted({f"{m[0]} ({m[1]})" for m in missing})
        print(f"flags: {used} used in deploy/ are missing from the binaries: {', '.join(names)}")
    else:
        print("flags: every flag and RINGWAY_* variable used in deploy/ exists in the binaries")

    for p in problems:
        print(f"ERROR {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
