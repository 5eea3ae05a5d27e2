"""Summarise a py-spy speedscope profile as text: where the server's time goes.

    python bench/profile_top.py /tmp/prof/sqlite_single_0ms.speedscope.json [--top 25]

Per thread: samples (py-spy records only non-idle samples by default, so samples /
(rate x seconds) is how busy the thread was). For the main (event loop) thread:
the top frames by self time (the leaf of each sample) and by inclusive time
(samples whose stack holds the frame), as % of that thread's samples, and the
same grouped by area (our code by package, SQLAlchemy, grpc, asyncio, ...).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

AREAS = (
    ("payorch/entrypoints/grpc/mappers", "payorch: proto mapping"),
    ("payorch/entrypoints", "payorch: grpc entrypoints"),
    ("payorch/adapters/persistence", "payorch: persistence adapter"),
    ("payorch/adapters/processors", "payorch: simulated processor"),
    ("payorch/app", "payorch: app (payments, router, auth)"),
    ("payorch/domain", "payorch: domain"),
    ("sqlalchemy/dialects", "SQLAlchemy: dialect/driver adaption"),
    ("sqlalchemy/pool", "SQLAlchemy: pool"),
    ("sqlalchemy", "SQLAlchemy: core (compile, execute, result)"),
    ("aiosqlite", "aiosqlite"),
    ("asyncpg", "asyncpg"),
    ("grpc", "grpc (python side)"),
    ("google/protobuf", "protobuf"),
    ("asyncio", "asyncio event loop"),
    ("logging", "logging"),
)


def frame_name(f: dict[str, Any]) -> str:
    file = str(f.get("file", ""))
    short = file.split("site-packages/")[-1].split("/src/")[-1].split("lib/python3")[-1]
    return f"{f['name']} ({short}:{f.get('line', '')})"


def function_name(f: dict[str, Any]) -> str:
    file = str(f.get("file", ""))
    short = file.split("site-packages/")[-1].split("/src/")[-1].split("lib/python3")[-1]
    return f"{f['name']} ({short})"


def area_of(f: dict[str, Any]) -> str:
    file = str(f.get("file", ""))
    for needle, label in AREAS:
        if needle in file:
            return label
    return "other: " + (file.rsplit("/", 1)[-1] or f.get("name", "?"))


def summarise(path: Path, top: int) -> str:
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    lines = [f"profile: {path}"]
    for prof in data["profiles"]:
        samples = prof["samples"]
        lines.append(f"  {prof['name']}: {len(samples)} samples")
    main = max(data["profiles"], key=lambda p: len(p["samples"]))
    count = len(main["samples"])
    samples = main["samples"]
    weights = main.get("weights") or [1] * len(samples)
    total = sum(weights) or 1
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    area_self: Counter[str] = Counter()
    area_incl: Counter[str] = Counter()
    func_incl: Counter[str] = Counter()
    for stack, w in zip(samples, weights, strict=False):
        if not stack:
            continue
        leaf = frames[stack[-1]]
        self_c[frame_name(leaf)] += w
        area_self[area_of(leaf)] += w
        for name in {frame_name(frames[i]) for i in stack}:
            incl_c[name] += w
        for area in {area_of(frames[i]) for i in stack}:
            area_incl[area] += w
        for func in {function_name(frames[i]) for i in stack}:
            func_incl[func] += w
    lines.append(f"\nbusiest thread: {main['name']} ({count} samples)")
    lines.append("\nby area, self time (leaf frame):")
    lines += [f"  {100 * n / total:5.1f}%  {a}" for a, n in area_self.most_common()]
    lines.append("\nby area, inclusive (a frame of that area anywhere on the stack):")
    lines += [f"  {100 * n / total:5.1f}%  {a}" for a, n in area_incl.most_common(top)]
    lines.append(f"\ntop {top} frames, self:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_c.most_common(top)]
    lines.append(f"\ntop {top} frames, inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl_c.most_common(top)]
    ours = [(f, n) for f, n in func_incl.most_common() if "payorch/" in f]
    lines.append(f"\nour functions, inclusive (any line), top {top}:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in ours[:top]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    print(summarise(args.profile, args.top))


if __name__ == "__main__":
    main()
