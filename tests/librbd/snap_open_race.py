#!/usr/bin/python3
"""Reproduces a librbd 16.2.15 crash with Ceph's own Python binding, no diskferry code.

One thread creates and removes snapshots of an image; OPENERS threads open the image at
those snapshots. With MODE "at-open" (rbd_open_read_only with the snapshot's name) an open
that fails part-way frees its image context while a request of the open is in flight, and
the process dies within about a second here (SIGSEGV, or "terminate called after throwing
std::system_error: Invalid argument", or a hang on a freed mutex). With MODE "set-snap" (open
the head, then rbd_snap_set: what diskferry's rbd crate does) it runs its whole time.

    eval "$(scripts/dev-cluster env)"
    tests/librbd/snap_open_race.py CEPH_CONF SECONDS OPENERS at-open|set-snap

Exit 0 and a line of counts when it survived; the image it made is removed then.
"""
import os
import sys
import threading
import time

import rados
import rbd

SNAPS = 6
conf, seconds, openers, mode = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if mode not in ("at-open", "set-snap"):
    sys.exit("MODE is at-open or set-snap")
cluster = rados.Rados(conffile=conf)
cluster.connect()
io = cluster.open_ioctx("rbd")
name = "snap-open-race-%d" % os.getpid()
features = (rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | rbd.RBD_FEATURE_OBJECT_MAP
            | rbd.RBD_FEATURE_FAST_DIFF | rbd.RBD_FEATURE_DEEP_FLATTEN)
rbd.RBD().create(io, name, 4 << 20, old_format=False, features=features)
stop = time.time() + seconds
counts = {"opened": 0, "missing": 0, "snapshots made": 0}


def churn():
    with rbd.Image(io, name) as image:
        i = 0
        while time.time() < stop:
            try:
                image.create_snap("s%d" % (i % SNAPS))
                counts["snapshots made"] += 1
            except rbd.ImageExists:
                pass
            try:
                image.remove_snap("s%d" % ((i + SNAPS // 2) % SNAPS))
            except rbd.ImageNotFound:
                pass
            i += 1


def open_snapshots():
    while time.time() < stop:
        for k in range(SNAPS):
            snap = "s%d" % k
            try:
                if mode == "at-open":
                    image = rbd.Image(io, name, snapshot=snap, read_only=True)
                else:
                    image = rbd.Image(io, name, read_only=True)
                    try:
                        image.set_snap(snap)
                    except rbd.ImageNotFound:
                        image.close()
                        raise
                with image:
                    image.size()
                    counts["opened"] += 1
            except rbd.ImageNotFound:
                counts["missing"] += 1


threads = [threading.Thread(target=churn)]
threads += [threading.Thread(target=open_snapshots) for _ in range(openers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(mode, counts, flush=True)
with rbd.Image(io, name) as image:
    for snap in list(image.list_snaps()):
        image.remove_snap(snap["name"])
rbd.RBD().remove(io, name)
