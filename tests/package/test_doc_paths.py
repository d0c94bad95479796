"""Every repository path named in the docs, README, comments or docstrings exists."""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
while not os.path.isfile(os.path.join(ROOT, "setup.py")):  # tests/<room>/ or tests/
    ROOT = os.path.dirname(ROOT)
TOP = ("ssd_r34", "tools", "benchmarks", "docs", "configs", "tests", "reference", ".ci")
ROOMS = ("layers", "modeling", "data", "checkpoint", "export", "engine", "model_zoo", "cli")
EXT = r"\.(?:py|md|yaml|cpp|sh|toml|ini|json|png)\b"
# a path with a top folder (tools/demo.py) or, relative to ssd_r34/, with a room
# (modeling/meta_arch.py), and markdown links to .md pages; globs are skipped.
# Paths in other projects' repositories that the docs name:
EXTERNAL = {"tools/accuracy-coco.py"}
PATH = re.compile(r"(?<![\w./~-])((?:%s)/[\w./-]*?%s|(?:%s)/[\w/]*\w%s)|\]\(([\w./-]+\.md)\b"
                  % ("|".join(map(re.escape, TOP)), EXT, "|".join(ROOMS), EXT))


def _files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    return [f for f in out.split() if f.endswith((".py", ".md", ".yaml", ".toml", ".cfg"))
            or f in ("Makefile", ".ci/run")]


def _exists(path, source):
    here = os.path.dirname(os.path.join(ROOT, source))
    candidates = [os.path.join(ROOT, path), os.path.join(ROOT, "ssd_r34", path),
                  os.path.join(here, path), os.path.join(ROOT, "docs", path)]
    return any(os.path.exists(c) for c in candidates)


def test_every_named_path_exists():
    missing = []
    for f in _files():
        if f == os.path.relpath(__file__, ROOT):
            continue
        text = open(os.path.join(ROOT, f), encoding="utf-8").read()
        for m in PATH.finditer(text):
            path = (m.group(1) or m.group(2)).rstrip(".")
            if "*" in path or path in EXTERNAL:
                continue
            if not _exists(path, f):
                line = text.count("\n", 0, m.start()) + 1
                missing.append(f"{f}:{line}: {path}")
        for m in re.finditer(r"/work/\S*", text):  # a document outside the repository
            missing.append(f"{f}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)
