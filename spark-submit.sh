#!/usr/bin/env bash
# Shopmine's one entry point for every job, locally (default) or on a cluster.
#
#   ./spark-submit.sh pipeline                 set up (first time) and run the whole pipeline on generated data
#   ./spark-submit.sh test [pytest args]       set up (first time) and run the test suite
#   ./spark-submit.sh JOB [options] [job args] run one job through the pip-installed pyspark's spark-submit
#   ./spark-submit.sh --help                   list the jobs
#
# Options (before or among the job's own arguments):
#   --master URL        local[*] (default), spark://host:7077, yarn, k8s://https://host:443
#   --deploy-mode MODE  client (default) or cluster
#   --overlay NAME      conf overlay: local (default for local masters) or cluster (default otherwise), or a YAML path
#   --conf spark.X=V    a Spark setting, passed to spark-submit
#   --conf key=value    a Shopmine setting (conf/base.yaml keys), passed to the job
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${SHOPMINE_VENV:-$ROOT/.venv}"
PY="${SHOPMINE_PYTHON:-python3.11}"
DELTA_PACKAGE="io.delta:delta-spark_2.13:4.0.1"
# The jobs, their files and descriptions come from the job registry (lib/shopmine/registry.py, standard library only,
# so any Python 3 runs it before the virtual environment exists).
registry() {
  local py="$VENV/bin/python"
  [[ -x "$py" ]] || py="$(command -v "$PY" || command -v python3)" || die "needs $PY (Python 3.11) on PATH"
  "$py" "$ROOT/lib/shopmine/registry.py" "$@"
}

die() { echo "spark-submit.sh: $*" >&2; exit 2; }

usage() {
  awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" | sed 's/^# \{0,1\}//'
  echo
  echo "Jobs:"
  registry help
  printf '  %-13s %s\n' "test" "run the test suite (pytest; extra arguments go to pytest)"
  printf '  %-13s %s\n' "setup" "create or update the virtual environment only"
}

# -- environment: created once, refreshed when pyproject.toml changes; pip's cache makes the second time fast -----
ensure_env() {
  local stamp="$VENV/.shopmine-stamp" want
  want="$(sha256sum "$ROOT/pyproject.toml" "$0" | sha256sum | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  command -v "$PY" >/dev/null || die "needs $PY (Python 3.11) on PATH, or SHOPMINE_PYTHON=/path/to/python3.11"
  command -v java >/dev/null || die "needs Java 17 on PATH (apt-get install openjdk-17-jre-headless)"
  echo "setting up $VENV (first time only; a few minutes) ..." >&2
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade "pip==24.3.1" "setuptools>=69" wheel
  # TensorFlow before Horovod: Horovod's build links against the installed TensorFlow.
  "$VENV/bin/python" -m pip install -q -e "$ROOT[dl,test]"
  if ! "$VENV/bin/python" -c "import horovod.tensorflow" 2>/dev/null; then
    echo "building horovod 0.28.1 (TensorFlow + Gloo, no MPI; cached by pip after the first build) ..." >&2
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1 \
      HOROVOD_WITHOUT_MPI=1 MAKEFLAGS="-j$(nproc)" \
      "$VENV/bin/python" -m pip install -q --no-build-isolation "horovod==0.28.1"
  fi
  echo "$want" > "$stamp"
}

# -- headless Chromium for the report test: Debian's package, installed when missing and we may (root + apt-get) ----
ensure_chromium() {
  command -v chromium >/dev/null && return 0
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "spark-submit.sh test: no chromium and cannot apt-get it here; the report test will say so" >&2; return 0
  fi
  echo "installing Debian's chromium for the report test (first time only) ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
    || echo "spark-submit.sh test: apt-get could not install chromium; the report test will say so" >&2
}

# -- the package shipped to executors (cluster runs): a zip of lib/shopmine --------------------------------------
build_zip() {
  local out="$ROOT/dist/shopmine.zip"
  mkdir -p "$ROOT/dist"
  (cd "$ROOT/lib" && rm -f "$out" && "$VENV/bin/python" -m zipfile -c "$out" shopmine >/dev/null)
  (cd "$ROOT" && "$VENV/bin/python" -m zipfile -c "$ROOT/dist/jobs.zip" jobs >/dev/null)
  echo "$out"
}

[[ $# -ge 1 ]] || { usage; exit 2; }
case "$1" in
  -h|--help|help) usage; exit 0 ;;
  setup) ensure_env; echo "environment ready: $VENV"; exit 0 ;;
  test)
    shift
    ensure_env
    ensure_chromium
    cd "$ROOT"
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    if [[ $rc -eq 5 ]]; then echo "spark-submit.sh test: pytest collected no tests: failing" >&2; exit 1; fi
    exit $rc ;;
esac

JOB="$1"; shift
JOB_FILE="$(registry file "$JOB")" || die "unknown job '$JOB'; try --help"

MASTER="local[*]"; DEPLOY="client"; OVERLAY=""; SPARK_ARGS=(); JOB_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --master) MASTER="$2"; shift 2 ;;
    --master=*) MASTER="${1#*=}"; shift ;;
    --deploy-mode) DEPLOY="$2"; shift 2 ;;
    --overlay) OVERLAY="$2"; shift 2 ;;
    --overlay=*) OVERLAY="${1#*=}"; shift ;;
    --conf|--conf=*)
      if [[ "$1" == --conf ]]; then kv="$2"; shift 2; else kv="${1#*=}"; shift; fi
      if [[ "$kv" == spark.* ]]; then SPARK_ARGS+=(--conf "$kv"); else JOB_ARGS+=(--conf "$kv"); fi ;;
    *) JOB_ARGS+=("$1"); shift ;;
  esac
done
if [[ -z "$OVERLAY" ]]; then
  if [[ "$MASTER" == local* ]]; then OVERLAY=local; else OVERLAY=cluster; fi
fi
# The overlay is a name under conf/ or a YAML path; the job gets it as an argument (a driver started elsewhere, in
# cluster deploy mode, has neither this environment nor this directory: it gets the file's name in its working dir).
if [[ "$OVERLAY" == *.yaml || "$OVERLAY" == *.yml ]]; then
  [[ -f "$OVERLAY" ]] || die "overlay file not found: $OVERLAY"
  OVERLAY_FILE="$(cd "$(dirname "$OVERLAY")" && pwd)/$(basename "$OVERLAY")"
else
  OVERLAY_FILE="$ROOT/conf/$OVERLAY.yaml"
  [[ -f "$OVERLAY_FILE" ]] || die "no overlay '$OVERLAY' (no $OVERLAY_FILE)"
fi
if [[ "$DEPLOY" == cluster ]]; then
  JOB_ARGS=(--overlay "$(basename "$OVERLAY_FILE")" "${JOB_ARGS[@]}")
else
  JOB_ARGS=(--overlay "$OVERLAY_FILE" "${JOB_ARGS[@]}")
fi

ensure_env
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$VENV/bin/python}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$VENV/bin/python}"
export SHOPMINE_OVERLAY="$OVERLAY"
export SHOPMINE_SUBMIT_MASTER="$MASTER"  # the master below wins over an overlay's spark.master
export SHOPMINE_PROJECT_DIR="$ROOT"       # conf/ and relative lake roots (the driver may import lib from a zip)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"

SUBMIT=("$VENV/bin/spark-submit" --master "$MASTER" --deploy-mode "$DEPLOY" --name "shopmine-$JOB"
        --packages "$DELTA_PACKAGE"
        --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
        --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
        --conf spark.sql.session.timeZone=UTC
        --conf spark.ui.showConsoleProgress=false
        --conf spark.sql.debug.maxToStringFields=500
        --driver-java-options "-Dlog4j2.configurationFile=file:$ROOT/conf/log4j2.properties")
if [[ "$MASTER" == local* ]]; then
  SUBMIT+=(--driver-memory "${SHOPMINE_DRIVER_MEMORY:-4g}")
else
  # Executors get the package and the conf files; in cluster mode the driver reads conf from its working dir.
  ZIP="$(build_zip)"
  SUBMIT+=(--py-files "$ZIP,$ROOT/dist/jobs.zip" --files "$ROOT/conf/base.yaml,$OVERLAY_FILE")
  if [[ "$DEPLOY" == cluster ]]; then
    SUBMIT+=(--conf spark.yarn.appMasterEnv.SHOPMINE_CONF_DIR=.
             --conf spark.kubernetes.driverEnv.SHOPMINE_CONF_DIR=.)
  fi
fi
export SHOPMINE_DELTA_JARS_PRESENT=1
# spark-submit merges the Python driver's stderr into its stdout: the job also writes its one-line failure reason to
# this file, and it is repeated on stderr here, so scripts can rely on "exit code != 0 + one line on stderr".
SHOPMINE_ERROR_FILE="$(mktemp)"
export SHOPMINE_ERROR_FILE
set +e
"${SUBMIT[@]}" "${SPARK_ARGS[@]}" "$JOB_FILE" "${JOB_ARGS[@]}"
rc=$?
set -e
if [[ $rc -ne 0 && -s "$SHOPMINE_ERROR_FILE" ]]; then cat "$SHOPMINE_ERROR_FILE" >&2; fi
rm -f "$SHOPMINE_ERROR_FILE"
exit $rc
