#!/usr/bin/env python3
"""Prints the YAML documents of a file (or stdin, for "-") as one JSON array, for the Rust
tests of deploy_kit.rs (which have no YAML parser). Needs PyYAML (kubernetes-validate's
dependency, installed by scripts/install-deps)."""
import json
import sys

import yaml

text = sys.stdin.read() if sys.argv[1] == "-" else open(sys.argv[1], encoding="utf-8").read()
json.dump([doc for doc in yaml.safe_load_all(text) if doc is not None], sys.stdout)
