"""Compose's file merging and interpolation, for the attributes the store's files use.

No Docker engine (nor the compose plugin) runs in CI, so the tests merge the hub's file
and `docker-compose.override.yml` with these rules, taken from the Compose specification
("Merge" and "Interpolation"):

- mappings merge key by key, the later file winning on scalars;
- attributes that may be a list or a mapping (`environment`, `labels`, `extra_hosts`,
  `depends_on`, `networks`, `build` as a string) are expanded to the mapping form first,
  then merged by key (a list-form `depends_on` entry means `condition: service_started`);
- `command`, `entrypoint` and `healthcheck.test` are replaced, not appended;
- `ports` are unique (an identical mapping is not added twice), `volumes` are unique by
  their target path (the later file's mount for a target wins), other sequences append;
- `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR:+alt}`, `$VAR`
  and `$$` are interpolated from the given environment (unset without default -> "").
"""

from __future__ import annotations

import copy
import re

REPLACED = {"command", "entrypoint"}
KEYED = {"environment", "labels", "extra_hosts", "sysctls", "depends_on", "networks", "annotations"}
TOP_LEVEL_MAPPINGS = {"services", "networks", "volumes", "secrets", "configs"}


# -- expansion to the canonical (mapping) form -------------------------------------------
def _keyed(name: str, value):
    if value is None:
        return {}
    if isinstance(value, dict):
        if name == "depends_on":
            return {k: ({"condition": "service_started"} if v is None else dict(v)) for k, v in value.items()}
        return {str(k): v for k, v in value.items()}
    out = {}
    for item in value:
        if name == "depends_on":
            out[item] = {"condition": "service_started"}
        elif name == "networks":
            out[item] = None
        elif name == "extra_hosts":
            host, _, ip = str(item).partition(":" if "=" not in str(item) else "=")
            out[host] = ip
        else:
            key, sep, val = str(item).partition("=")
            out[key] = val if sep else None  # `- KEY` alone: taken from the shell at run time
    return out


def normalise_service(service: dict) -> dict:
    """A service in canonical form (a deep copy)."""
    out = copy.deepcopy(service or {})
    for name in KEYED & set(out):
        out[name] = _keyed(name, out[name])
    if isinstance(out.get("build"), str):
        out["build"] = {"context": out["build"]}
    if isinstance(out.get("tmpfs"), str):
        out["tmpfs"] = [out["tmpfs"]]
    return out


# -- merging -------------------------------------------------------------------------------
def _volume_target(volume) -> str:
    if isinstance(volume, dict):
        return volume["target"]
    parts = str(volume).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _merge_unique(base: list, extra: list, key) -> list:
    out = list(base)
    for item in extra:
        keys = [key(x) for x in out]
        if key(item) in keys:
            out[keys.index(key(item))] = item
        else:
            out.append(item)
    return out


def _merge_mapping(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_mapping(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_service(base: dict, override: dict) -> dict:
    base, override = normalise_service(base), normalise_service(override)
    out = dict(base)
    for key, value in override.items():
        if key not in out or key in REPLACED or value is None:
            out[key] = value
        elif key == "healthcheck":
            out[key] = _merge_mapping(out[key], value)  # `test` is a sequence, replaced by the mapping merge
        elif key == "ports":
            out[key] = _merge_unique(out[key], value, key=lambda p: str(p))
        elif key == "volumes":
            out[key] = _merge_unique(out[key], value, key=_volume_target)
        elif key in ("secrets", "configs"):
            out[key] = _merge_unique(
                out[key], value, key=lambda s: s.get("target", s.get("source")) if isinstance(s, dict) else s
            )
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _merge_mapping(out[key], value)
        elif isinstance(value, list) and isinstance(out[key], list):
            out[key] = out[key] + [v for v in value if v not in out[key]]
        else:
            out[key] = value
    return out


def merge(*documents: dict) -> dict:
    """Merge compose documents in command-line order (`-f first -f second ...`)."""
    result: dict = {}
    for doc in documents:
        for key, value in (doc or {}).items():
            if key == "services":
                services = result.setdefault("services", {})
                for name, service in (value or {}).items():
                    services[name] = merge_service(services.get(name, {}), service or {})
            elif key in TOP_LEVEL_MAPPINGS or key.startswith("x-"):
                result[key] = _merge_mapping(result.get(key) or {}, value or {})
            else:
                result[key] = copy.deepcopy(value)
    return result


# -- interpolation -------------------------------------------------------------------------
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def interpolate(value, env: dict):
    """Substitute variables in every string of `value` (recursively), as compose does."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg") or ""
        present = name in env
        nonempty = present and env[name] != ""
        if op in (":-", "-"):
            return env[name] if (nonempty if op == ":-" else present) else arg
        if op in (":?", "?"):
            if not (nonempty if op == ":?" else present):
                raise InterpolationError(f"{name}: {arg or 'required'}")
            return env[name]
        if op in (":+", "+"):
            return arg if (nonempty if op == ":+" else present) else ""
        return env.get(name, "")

    return _VAR.sub(sub, value)


# -- other compose semantics -----------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text) -> float:
    """A compose duration ("1m30s", "16m", "10s") in seconds."""
    text = str(text).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a compose duration: {text!r}")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def active_services(doc: dict, profiles: set[str]) -> set[str]:
    """Services enabled with these profiles active: those without `profiles`, or matching one."""
    return {
        name
        for name, svc in doc.get("services", {}).items()
        if not svc.get("profiles") or set(svc["profiles"]) & profiles
    }
