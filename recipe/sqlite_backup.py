#!/usr/bin/env python3
"""backupbot hooks of coopbot's data volume: consistent copies of its SQLite files.

`backup DIR`: every *.sqlite / *.db under DIR (the bot's state and audit log, the E2EE
store) is copied with SQLite's online backup API into DIR/.backup/, so the snapshot holds
a whole database even while the bot writes. `restore DIR`: after a restore, those copies
are put back in place (the bot should be stopped meanwhile: scale it to 0, restore, deploy).
"""

import shutil
import sqlite3
import sys
from pathlib import Path


def main(action: str, root: Path) -> None:
    copies = root / ".backup"
    if action == "backup":
        for db in sorted([*root.rglob("*.sqlite"), *root.rglob("*.db")]):
            if copies in db.parents:
                continue
            target = copies / db.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            src, dst = sqlite3.connect(db), sqlite3.connect(target)
            with dst:
                src.backup(dst)
            src.close()
            dst.close()
            print(f"copied {db}")
    elif action == "restore":
        for copy in sorted(copies.rglob("*")) if copies.is_dir() else []:
            if copy.is_file():
                target = root / copy.relative_to(copies)
                shutil.copy2(copy, target)
                print(f"restored {target}")
    else:
        raise SystemExit(f"usage: {sys.argv[0]} backup|restore DIR")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
