#!/bin/sh
# Download the public annotation files of the real benchmarks into data/<name>/, under their
# published names, so that `dataset=<name>` finds them (lsdo/data/annotations.py reads them).
# Videos are not fetched (see data/README.md for where to get them).
#
#   sh data/fetch_annotations.sh [--dry-run] [--dest DIR] [msrvtt] [msvd] [didemo] [lsmdc]
#
# No dataset named = msrvtt msvd didemo lsmdc. --dest DIR writes DIR/<name>/ instead of data/<name>/.
# Idempotent: a file that already exists is skipped (delete it to fetch it again). --dry-run only
# prints what would be fetched. Needs curl or wget, and unzip or python3 for the zip archives.
#
# Sources (URLs checked against the projects' READMEs, not by downloading, since this script was
# written offline; if one has moved, the printed message says where the file is published):
#   MSR-VTT  msrvtt_data.zip of the CLIP4Clip release v0.0 (MSRVTT_data.json and the split csvs).
#   MSVD     captions_msvd.json from the X-Pool repository (layer6ai-labs/xpool, data/MSVD/), and
#            train/val/test_list.txt from msvd_data.zip of the CLIP4Clip release v0.0.
#   DiDeMo   {train,val,test}_data.json from LisaAnne/LocalizingMoments (data/), the dataset's
#            release (CC BY-NC-SA). LisaAnne/TemporalLanguageRelease (TEMPO) does not hold these raw
#            jsons: its setup.sh fetches a preprocessed zip instead.
#   LSMDC    licensed: cannot be fetched; the script prints how to request it.
set -eu

# Overridable from the environment (a mirror, or file:// URLs for testing).
CLIP4CLIP_RELEASE=${CLIP4CLIP_RELEASE:-https://github.com/ArrowLuo/CLIP4Clip/releases/download/v0.0}
MSVD_CAPTIONS_URL=${MSVD_CAPTIONS_URL:-https://raw.githubusercontent.com/layer6ai-labs/xpool/HEAD/data/MSVD/captions_msvd.json}
DIDEMO_RAW=${DIDEMO_RAW:-https://raw.githubusercontent.com/LisaAnne/LocalizingMoments/HEAD/data}

DRY_RUN=0
DEST=$(cd "$(dirname "$0")" && pwd)
NAMES=""

usage() {
    sed -n '6,11p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --dest)
            [ $# -ge 2 ] || { echo "error: --dest needs a folder" >&2; exit 2; }
            DEST=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        msrvtt | msvd | didemo | lsmdc) NAMES="$NAMES $1" ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[ -n "$NAMES" ] || NAMES="msrvtt msvd didemo lsmdc"

say() { printf '%s\n' "$*"; }

# download URL FILE: fetch URL to FILE (via FILE.part) unless FILE exists.
download() {
    if [ -e "$2" ]; then
        say "  skip     $2 (exists)"
        return 0
    fi
    if [ "$DRY_RUN" -eq 1 ]; then
        say "  would fetch $1"
        say "           -> $2"
        return 0
    fi
    mkdir -p "$(dirname "$2")"
    say "  fetch    $1"
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$2.part" "$1" || { rm -f "$2.part"; return 1; }
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2.part" "$1" || { rm -f "$2.part"; return 1; }
    else
        echo "error: neither curl nor wget is installed" >&2
        exit 1
    fi
    mv "$2.part" "$2" || return 1
    say "  wrote    $2"
}

# unzip_to ZIP DIR: extract ZIP into DIR.
unzip_to() {
    if command -v unzip >/dev/null 2>&1; then
        unzip -q -o "$1" -d "$2"
    elif command -v python3 >/dev/null 2>&1; then
        python3 -m zipfile -e "$1" "$2"
    else
        echo "error: need unzip or python3 to extract $1" >&2
        exit 1
    fi
}

# from_zip URL OUTDIR FILE...: make sure OUTDIR/FILE exist, fetching URL (a zip) and taking them
# from it (at any depth) if one is missing.
from_zip() {
    zurl=$1
    zout=$2
    shift 2
    zmissing=""
    for f in "$@"; do
        if [ -e "$zout/$f" ]; then say "  skip     $zout/$f (exists)"; else zmissing="$zmissing $f"; fi
    done
    [ -n "$zmissing" ] || return 0
    if [ "$DRY_RUN" -eq 1 ]; then
        say "  would fetch $zurl"
        say "           -> extract$zmissing into $zout/"
        return 0
    fi
    mkdir -p "$zout"
    ztmp=$(mktemp -d "${TMPDIR:-/tmp}/lsdo_fetch.XXXXXX")
    zip="$ztmp/$(basename "$zurl")"
    if ! download "$zurl" "$zip"; then
        rm -rf "$ztmp"
        return 1
    fi
    if ! unzip_to "$zip" "$ztmp/x"; then
        echo "error: cannot extract $zip" >&2
        rm -rf "$ztmp"
        return 1
    fi
    for f in $zmissing; do
        found=$(find "$ztmp/x" -type f -name "$f" | head -n 1)
        if [ -z "$found" ]; then
            echo "error: $f is not in $(basename "$zurl")" >&2
            rm -rf "$ztmp"
            return 1
        fi
        mv "$found" "$zout/$f" || { rm -rf "$ztmp"; return 1; }
        say "  wrote    $zout/$f"
    done
    rm -rf "$ztmp"
}

failed=""
fail() {
    failed="$failed $1"
    echo "warning: $1: $2" >&2
}

fetch_msrvtt() {
    say "MSR-VTT -> $DEST/msrvtt"
    from_zip "$CLIP4CLIP_RELEASE/msrvtt_data.zip" "$DEST/msrvtt" \
        MSRVTT_data.json MSRVTT_train.9k.csv MSRVTT_train.7k.csv MSRVTT_JSFUSION_test.csv ||
        fail msrvtt "download failed; get msrvtt_data.zip from https://github.com/ArrowLuo/CLIP4Clip (README, Data Preparing)"
    say "  videos: not fetched (see data/README.md); put them in $DEST/msrvtt/videos/<video_id>.mp4"
}

fetch_msvd() {
    say "MSVD -> $DEST/msvd"
    download "$MSVD_CAPTIONS_URL" "$DEST/msvd/captions_msvd.json" ||
        fail msvd "captions_msvd.json: download failed; it is published in https://github.com/layer6ai-labs/xpool under data/MSVD/"
    from_zip "$CLIP4CLIP_RELEASE/msvd_data.zip" "$DEST/msvd" train_list.txt val_list.txt test_list.txt ||
        fail msvd "split lists: download failed; get msvd_data.zip from https://github.com/ArrowLuo/CLIP4Clip (README, Data Preparing)"
    say "  videos: YouTubeClips.tar from https://www.cs.utexas.edu/users/ml/clamp/videoDescription/ -> $DEST/msvd/videos/<video_id>.avi"
}

fetch_didemo() {
    say "DiDeMo -> $DEST/didemo"
    for s in train val test; do
        download "$DIDEMO_RAW/${s}_data.json" "$DEST/didemo/${s}_data.json" ||
            fail didemo "${s}_data.json: download failed; it is in the data/ folder of https://github.com/LisaAnne/LocalizingMoments"
    done
    say "  videos: see https://github.com/LisaAnne/LocalizingMoments/blob/master/data/README.md -> $DEST/didemo/videos/<video>"
}

fetch_lsmdc() {
    say "LSMDC -> $DEST/lsmdc: cannot be fetched (licensed data)."
    say "  Request access from MPII at https://sites.google.com/site/describingmovies/download (sign the"
    say "  LSMDC licence; do not share the clips). Then put LSMDC16_annos_training.csv, LSMDC16_annos_val.csv,"
    say "  LSMDC16_challenge_1000_publictect.csv and videos/<movie>/<clip>.avi in $DEST/lsmdc/."
}

[ "$DRY_RUN" -eq 0 ] || say "(dry run: nothing is downloaded or written)"
for name in $NAMES; do
    "fetch_$name"
done
if [ -n "$failed" ]; then
    echo "some downloads failed:$failed (see the warnings above)" >&2
    exit 1
fi
