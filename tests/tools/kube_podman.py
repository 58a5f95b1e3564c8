#!/usr/bin/python3
"""Translate one container of a Kubernetes manifest into `podman run`
arguments with the same namespaces, user, capabilities, seccomp profile,
mounts, environment and command, so that the VM tests run the pod specs
of deploy/kubernetes/ as written. A field that would change what the
container may do, and that this does not translate, is an error: the
translation is exact or it fails.

    kube_podman.py MANIFEST --container NAME --workdir DIR [--host-root DIR]
                   [--image-file PATH=SRC]... [--image-env NAME=VALUE]...

--image-file and --image-env stand in for the image: files it would hold
(bind-mounted read-only) and environment it would set. ConfigMaps of the
manifest are written under DIR and mounted as Kubernetes would. Prints
the arguments after `podman run` as a JSON list (the image's root comes
last, as `--rootfs`, from the caller). --host-root (default /) is where
hostPath volumes are looked up and created, for tests off the node.
"""

import argparse
import json
import os
import sys

import yaml

POD_KEYS = {"containers", "hostPID", "securityContext", "volumes", "restartPolicy",
            "nodeSelector", "tolerations", "priorityClassName",
            "terminationGracePeriodSeconds"}
POD_SECURITY = {"supplementalGroups", "runAsUser", "runAsGroup", "runAsNonRoot"}
CONTAINER_KEYS = {"name", "image", "command", "args", "env", "ports", "readinessProbe",
                  "resources", "securityContext", "volumeMounts"}
SECURITY = {"privileged", "allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsUser",
            "runAsGroup", "runAsNonRoot", "seccompProfile", "capabilities"}


def fail(msg):
    sys.exit(f"kube_podman: {msg}")


def only(keys, allowed, where):
    extra = set(keys) - allowed
    if extra:
        fail(f"cannot translate {sorted(extra)} of {where}")


def pod_spec(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        return doc["spec"]
    if kind in ("DaemonSet", "Job", "Deployment"):
        return doc["spec"]["template"]["spec"]
    return None


def translate(docs, name, workdir, image_files, image_env, host_root="/"):
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
    spec = next((s for s in map(pod_spec, docs) if s and any(
        c["name"] == name for c in s["containers"])), None)
    if spec is None:
        fail(f"no container {name!r} in the manifest")
    only(spec, POD_KEYS, "the pod spec")
    c = next(c for c in spec["containers"] if c["name"] == name)
    only(c, CONTAINER_KEYS, f"container {name}")
    pod_sec = spec.get("securityContext", {})
    only(pod_sec, POD_SECURITY, "the pod's securityContext")
    sec = c.get("securityContext", {})
    only(sec, SECURITY, f"the securityContext of {name}")

    args = []
    # The pod's own PID namespace unless hostPID; no network in these VMs.
    args += ["--pid", "host" if spec.get("hostPID") else "private", "--network", "none"]
    uid = sec.get("runAsUser", pod_sec.get("runAsUser"))
    gid = sec.get("runAsGroup", pod_sec.get("runAsGroup"))
    if uid is not None:
        args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    if sec.get("runAsNonRoot", pod_sec.get("runAsNonRoot")) and not uid:
        fail("runAsNonRoot without a non-zero runAsUser")
    for g in pod_sec.get("supplementalGroups", []):
        args += ["--group-add", str(g)]
    if sec.get("privileged"):
        args.append("--privileged")
    caps = sec.get("capabilities", {})
    only(caps, {"drop", "add"}, "capabilities")
    for cap in caps.get("drop", []):
        args += ["--cap-drop", cap.lower()]
    for cap in caps.get("add", []):
        args += ["--cap-add", "CAP_" + cap]
    if sec.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    seccomp = sec.get("seccompProfile", {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        fail(f"seccompProfile {seccomp}")
    if sec.get("readOnlyRootFilesystem"):
        args.append("--read-only")

    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        only(m, {"name", "mountPath", "readOnly"}, f"volumeMount {m.get('name')}")
        v = volumes[m["name"]]
        ro = ":ro" if m.get("readOnly") else ""
        if "hostPath" in v:
            hp = v["hostPath"]
            path = os.path.join(host_root, hp["path"].lstrip("/"))
            if hp.get("type") == "DirectoryOrCreate":
                os.makedirs(path, exist_ok=True)
            elif hp.get("type") == "Directory" and not os.path.isdir(path):
                fail(f"hostPath {hp['path']} is not a directory (type Directory)")
            args += ["-v", f"{path}:{m['mountPath']}{ro}"]
        elif "configMap" in v:
            data = configmaps.get(v["configMap"]["name"])
            if data is None:
                fail(f"no ConfigMap {v['configMap']['name']} in the manifest")
            d = os.path.join(workdir, "configmap-" + v["configMap"]["name"])
            os.makedirs(d, exist_ok=True)
            for k, text in data.items():
                with open(os.path.join(d, k), "w") as f:
                    f.write(text)
            os.chmod(d, 0o755)
            args += ["-v", f"{d}:{m['mountPath']}:ro"]
        else:
            fail(f"volume {m['name']}: only hostPath and configMap are translated")

    for path, src in image_files:
        args += ["-v", f"{src}:{path}:ro"]
    for k, v in image_env:
        args += ["-e", f"{k}={v}"]
    for e in c.get("env", []):
        only(e, {"name", "value"}, f"env {e.get('name')}")
        args += ["-e", f"{e['name']}={e['value']}"]
    command = c.get("command", []) + c.get("args", [])
    if not command:
        fail(f"container {name} has no command (the image's entrypoint is not known here)")
    return args, command


def pairs(items, what):
    out = []
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            fail(f"{what} wants NAME=VALUE, not {item!r}")
        out.append((k, v))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("--container", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--image-file", action="append", default=[])
    p.add_argument("--image-env", action="append", default=[])
    p.add_argument("--host-root", default="/")
    a = p.parse_args()
    with open(a.manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    args, command = translate(docs, a.container, a.workdir,
                              pairs(a.image_file, "--image-file"),
                              pairs(a.image_env, "--image-env"), a.host_root)
    print(json.dumps({"args": args, "command": command}))


if __name__ == "__main__":
    main()
