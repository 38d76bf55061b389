#!/usr/bin/env bash
# The whole cxrkit pipeline as a shell script: each stage prints its artifact
# path on stdout, so stages chain with $(...). Re-running the script is cheap:
# a stage whose output is intact and up to date is a no-op.
#
#   examples/pipeline.sh /data/mimic-cxr/files /data/mimic-cxr/reports runs/mimic
set -euo pipefail

images=${1:?usage: pipeline.sh IMAGES_DIR REPORTS_DIR OUT_DIR}
reports=${2:?usage: pipeline.sh IMAGES_DIR REPORTS_DIR OUT_DIR}
out=${3:?usage: pipeline.sh IMAGES_DIR REPORTS_DIR OUT_DIR}
workers=${WORKERS:-$(nproc)}

ds=$(cxrkit ingest "$images" --reports "$reports" --out "$out/dataset" \
        --image-size 512 --workers "$workers" --salt-file "${CXRKIT_SALT:-$HOME/.config/cxrkit/salt.hex}")
ann=$(cxrkit annotate "$ds" --out "$out/annotations" --workers "$workers" --preview 16)
ckpt=$(cxrkit pretrain "$ds" --annotations "$ann" --out "$out/mae" --preset mae)
ev=$(cxrkit eval "$ckpt" "$ds" "$ann" --out "$out/eval")
cxrkit export "$ckpt" --out "$out/export" --eval "$ev"

cxrkit verify "$out/export"
cxrkit show "$out/export"
