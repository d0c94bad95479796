"""Fuzz cases for the checkpoint reader (tests/checkpoint/test_fuzz.py runs this in a child process, so
that a crash of the process is seen as a failure instead of taking pytest down).

``python fuzz_checkpoints.py CASES SEED FOLDER`` writes CASES mutated or truncated checkpoint
files (PyTorch zip archives, legacy pickles, pickled module trees, pickles carrying code) into
FOLDER, reads each with ``load_checkpoint_file`` and, when it loads, passes it through the
converters (``find_mlperf_checkpoint`` / ``convert_mlperf_state_dict``,
``convert_torchvision_resnet34``). Each case runs under a 10 s alarm. Prints one JSON line:
outcome counts, the cases that ended otherwise (exception type, message, case) and whether a
code payload ran (it would create FOLDER/PWNED).
"""
import collections
import io
import json
import os
import pickle
import random
import signal
import sys
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository root

from ssd_r34.checkpoint import (CheckpointFormatError, UnsafeCheckpointError,  # noqa: E402
                                convert_mlperf_state_dict, convert_torchvision_resnet34,
                                find_mlperf_checkpoint, is_torchvision_resnet34,
                                load_checkpoint_file)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def _module_tree_pickle(zip_format):
    """A pickled whole nn.Module (a tiny tree under ``models.*``, like the released MLPerf
    file), written by hand so that no class needs to exist."""
    Inner = type("Inner", (), {"__module__": "models.ssd_r34"})

    def state(params):
        return {"training": False, "_parameters": collections.OrderedDict(params),
                "_buffers": collections.OrderedDict(), "_modules": collections.OrderedDict(),
                "_non_persistent_buffers_set": set()}

    class Reducer:
        def __init__(self, st):
            self.st = st

        def __reduce__(self):
            return (Inner, (), self.st)

    sys.modules.setdefault("models", type(sys)("models"))
    mod = type(sys)("models.ssd_r34")
    mod.Inner = Inner
    sys.modules["models.ssd_r34"] = mod
    child = Reducer(state({"weight": torch.nn.Parameter(torch.randn(4, 3))}))
    top = state({"bias": torch.nn.Parameter(torch.randn(4))})
    top["_modules"]["conv"] = child
    buf = io.BytesIO()
    torch.save(Reducer(top), buf, _use_new_zipfile_serialization=zip_format)
    return buf.getvalue()


def seeds(marker):
    """name -> bytes of valid (or code-carrying) files to mutate."""
    sd = collections.OrderedDict([("backbone.conv1.weight", torch.randn(4, 3, 3, 3)),
                                  ("head.bias", torch.randn(16).half()),
                                  ("steps", torch.tensor([1, 2, 3]))])
    mlperf = collections.OrderedDict([("model.layer1.0.weight", torch.randn(4, 3, 3, 3)),
                                      ("loc.0.weight", torch.randn(16, 2, 3, 3)),
                                      ("conf.0.weight", torch.randn(12, 2, 3, 3))])
    out = {}
    for name, obj in (("zip_sd", sd), ("zip_dict", {"model": mlperf, "label_map": {1: 1}})):
        buf = io.BytesIO()
        torch.save(obj, buf)
        out[name] = buf.getvalue()
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    out["legacy_sd"] = buf.getvalue()
    out["module_zip"] = _module_tree_pickle(True)
    out["module_legacy"] = _module_tree_pickle(False)
    cmd = f"touch {marker}"
    for mod, fn in (("os", "system"), ("posix", "system"), ("builtins", "eval"),
                    ("subprocess", "getoutput")):
        arg = cmd if fn != "eval" else f"__import__('os').system({cmd!r})"
        payload = (b"\x80\x02c" + mod.encode() + b"\n" + fn.encode() + b"\nq\x00X"
                   + len(arg).to_bytes(4, "little") + arg.encode() + b"\x85R.")
        out[f"payload_{mod}_{fn}"] = _as_zip(payload)
    return out


def _as_zip(pickle_bytes, template=None):
    """A PyTorch zip archive whose data.pkl is ``pickle_bytes`` (CRCs made to fit, so that
    the pickle itself is what the reader meets)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        if template is None:
            w.writestr("archive/data.pkl", pickle_bytes)
            w.writestr("archive/version", "3\n")
            w.writestr("archive/byteorder", "little")
        else:
            for n, b in template.items():
                w.writestr(n, pickle_bytes if n.endswith("data.pkl") else b)
    return out.getvalue()


GLOBALS = [b"cos\nsystem\n", b"cposix\nsystem\n", b"cbuiltins\neval\n", b"cbuiltins\nexec\n",
           b"c__builtin__\neval\n", b"csubprocess\nPopen\n", b"ctorch\nload\n",
           b"cmodels.x\nY\n", b"ctorch._utils\n_rebuild_tensor_v2\n"]


def mutate(data, rng, zip_members):
    kind = rng.choice(["truncate", "flip", "insert", "delete", "pickle", "global", "splice"])
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[:rng.randrange(len(b))]), kind
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b), kind
    if kind == "insert":
        i = rng.randrange(len(b) + 1)
        return bytes(b[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
                     + b[i:]), kind
    if kind == "delete":
        i = rng.randrange(len(b))
        return bytes(b[:i] + b[i + rng.randint(1, 16):]), kind
    if zip_members is None:
        return bytes(b[:rng.randrange(len(b))]), "truncate"
    pkl = bytearray(next(v for k, v in zip_members.items() if k.endswith("data.pkl")))
    if kind == "pickle":  # mutate the pickle inside a well-formed archive
        for _ in range(rng.randint(1, 4)):
            pkl[rng.randrange(len(pkl))] = rng.randrange(256)
    elif kind == "global":  # a dangerous or odd global spliced into the pickle
        i = rng.randrange(1, len(pkl))
        pkl = pkl[:i] + rng.choice(GLOBALS) + pkl[i:]
    else:  # a truncated pickle inside a well-formed archive
        pkl = pkl[:rng.randrange(1, len(pkl))]
    return _as_zip(bytes(pkl), zip_members), kind


def convert(obj, how):
    ck = find_mlperf_checkpoint(obj, how, None)
    if ck is not None:
        convert_mlperf_state_dict(ck)
    sd = obj.get("model", obj) if isinstance(obj, dict) else obj
    if isinstance(sd, dict) and is_torchvision_resnet34(sd):
        convert_torchvision_resnet34(sd)


def main(cases, seed, folder):
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))
    signal.signal(signal.SIGALRM, _alarm)
    marker = os.path.join(folder, "PWNED")
    base = seeds(marker)
    members = {}
    for k, v in base.items():
        try:
            z = zipfile.ZipFile(io.BytesIO(v))
            members[k] = {n: z.read(n) for n in z.namelist()}
        except zipfile.BadZipFile:
            members[k] = None
    rng = random.Random(seed)
    outcomes, odd = collections.Counter(), []
    path = os.path.join(folder, "case.pth")
    names = sorted(base)
    for case in range(cases):
        name = names[case % len(names)] if case < len(names) * 2 else rng.choice(names)
        data, kind = (base[name], "as is") if case < len(names) else \
            mutate(base[name], rng, members[name])
        with open(path, "wb") as f:
            f.write(data)
        signal.alarm(10)
        try:
            obj, how = load_checkpoint_file(path)
            outcomes["loaded"] += 1
            try:
                convert(obj, how)
            except CheckpointFormatError:
                outcomes["loaded, refused by the converter"] += 1
        except UnsafeCheckpointError as e:
            outcomes["UnsafeCheckpointError"] += 1
            if not str(e).startswith(path):
                odd.append(("unnamed", type(e).__name__, str(e)[:200], case, name, kind))
        except CheckpointFormatError as e:
            outcomes["CheckpointFormatError"] += 1
            # read errors name the file; converter errors (on a loaded object) name the keys
            if "\n" in str(e).split(":")[0]:
                odd.append(("unnamed", type(e).__name__, str(e)[:200], case, name, kind))
        except Hang:
            outcomes["hang"] += 1
            odd.append(("hang", "", "", case, name, kind))
        except BaseException as e:  # noqa: BLE001 - what the test is looking for
            outcomes[type(e).__name__] += 1
            odd.append(("error", type(e).__name__, str(e)[:200], case, name, kind))
        finally:
            signal.alarm(0)
    print(json.dumps({"cases": cases, "outcomes": outcomes, "odd": odd[:20],
                      "executed": os.path.exists(marker)}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
