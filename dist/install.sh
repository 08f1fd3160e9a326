#!/usr/bin/env bash
# Installs the ai-infra-build binary for the GitHub Action, verified against the SHA-256
# checksums committed next to this script (dist/checksums/VERSION.sha256). Fail closed: a
# version without committed checksums, or a binary whose checksum differs, stops the job.
#
# Where the binary comes from, first that exists:
#   1. the runner's tool cache:   $RUNNER_TOOL_CACHE/ai-infra-build/VERSION/ARCH/ai-infra-build
#   2. shipped with the action:   dist/ai-infra-build-VERSION-TARGET.tar.gz (air-gapped runners
#                                 that mirror the action repository add the release asset here)
#   3. a download, with retries and timeouts, from `binary-url` (a mirror of the release
#      assets) or else the GitHub release of the action's repository.
# Every one is checked against the committed checksums before it is used; a download is
# then put into the tool cache for the next job on the same runner.
#
# The version: dist/VERSION, the release this checkout of the action was released with (the
# release workflow commits it, with that version's checksums, into the commit it tags vX.Y.Z;
# the major tag v1 moves to such a commit). It must agree with the action's ref (v1.2.3 that
# version, v1 or v1.2 a version under it) and with the `version` input when that is given;
# a checkout without dist/VERSION (a branch, `uses: ./`) needs the `version` input. Any
# disagreement stops the job (docs/releasing.md). The binary must say that version too.
#
# Downloads are https only (curl --proto =https, redirects too); plain http only for an
# explicit `binary-url` on the loopback interface (127.0.0.0/8, localhost, [::1]): tests and
# release servers on the runner itself.
#
# Environment (the action maps its inputs to these; tests set them directly):
#   AIB_VERSION            `version` input (`1.2.3` or `v1.2.3`; empty: see above)
#   AIB_BINARY_URL         `binary-url` input: a base URL the asset name is appended to, or a
#                          URL template with {version}, {tag}, {target} and {asset}
#   AIB_ACTION_REF         the action's ref (default $GITHUB_ACTION_REF)
#   AIB_ACTION_REPOSITORY  owner/repo of the action (default $GITHUB_ACTION_REPOSITORY,
#                          then $GITHUB_REPOSITORY), for GitHub release downloads
#   GITHUB_SERVER_URL      default https://github.com
#   RUNNER_TOOL_CACHE      tool cache root (no tool cache when unset)
#   RUNNER_TEMP            scratch space (default: a temp dir)
#   GITHUB_PATH, GITHUB_OUTPUT   when set: the binary's directory is added to PATH, and the
#                          outputs `path`, `version`, `target` and `source` are written
#   AIB_DIST_DIR           where checksums and shipped binaries are (default: this script's dir)
#   AIB_INSTALL_DIR        where a binary from dist/ or a download goes when there is no
#                          tool cache (default: $RUNNER_TEMP/ai-infra-build/VERSION)
#   AIB_RETRIES, AIB_RETRY_DELAY, AIB_CONNECT_TIMEOUT, AIB_MAX_TIME
#                          download retries (5), seconds between them (2), connect timeout (10)
#                          and the bound on one try (300)
#   AIB_UNAME_S, AIB_UNAME_M   stand-ins for `uname -s` / `uname -m` (tests)
#
# Prints the installed binary's path on stdout; progress and errors go to stderr.
# Exit codes: 0 installed, 1 failed (the message says why and what to do).
set -euo pipefail

log() { printf 'ai-infra-build install: %s\n' "$*" >&2; }
die() {
  printf 'ai-infra-build install: error: %s\n' "$1" >&2
  shift
  for help in "$@"; do printf '  help: %s\n' "$help" >&2; done
  exit 1
}

dist_dir=${AIB_DIST_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
docs="https://github.com/${AIB_ACTION_REPOSITORY:-${GITHUB_ACTION_REPOSITORY:-ai-infra-build/ai-infra-build}}#troubleshooting"

# --- the target ---------------------------------------------------------------------------
os=${AIB_UNAME_S:-$(uname -s)}
machine=${AIB_UNAME_M:-$(uname -m)}
[ "$os" = Linux ] || die "unsupported operating system '$os': ai-infra-build ships static Linux binaries only (x86_64 and aarch64)" \
  "run the job on a Linux runner (runs-on: ubuntu-latest, or a self-hosted Linux runner)"
case "$machine" in
  x86_64 | amd64) target=x86_64-unknown-linux-musl arch=x64 ;;
  aarch64 | arm64) target=aarch64-unknown-linux-musl arch=arm64 ;;
  *) die "unsupported machine '$machine': ai-infra-build ships x86_64 and aarch64 Linux binaries only" \
    "run the job on an x86_64 or aarch64 Linux runner" ;;
esac

# --- the version --------------------------------------------------------------------------
# The action and its binary are released together: a release commit (what a tag vX.Y.Z
# names, docs/releasing.md) carries dist/VERSION and that version's checksums. So the
# version is what this checkout names (dist/VERSION), checked against what the action's ref
# names: an exact tag (v1.2.3) that version, a major or minor tag (v1, v1.2) a version
# under it; a commit SHA names nothing more than its dist/VERSION. A mismatch stops the job:
# it means the action's files and the binary come from different releases.
semver='^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$'
known_versions() {
  local f names=()
  for f in "$dist_dir"/checksums/*.sha256; do
    [ -e "$f" ] && names+=("$(basename "$f" .sha256)")
  done
  if [ ${#names[@]} -eq 0 ]; then echo "none"; else echo "${names[*]}"; fi
}
ref=${AIB_ACTION_REF:-${GITHUB_ACTION_REF:-}}
ref=${ref#refs/tags/}
ref=${ref#refs/heads/}
requested=${AIB_VERSION:-}
if [ -n "$requested" ]; then
  [[ ${requested#v} =~ $semver ]] || die "version input '$requested' is not a version like 1.2.3" \
    "leave it empty to use the version this action release ships, or give one of: $(known_versions)"
fi
named=""
if [ -s "$dist_dir/VERSION" ]; then
  named=$(tr -d ' \t\r\n' <"$dist_dir/VERSION")
  named=${named#v}
  [[ $named =~ $semver ]] || die "dist/VERSION holds '$named', not a version like 1.2.3" \
    "the release workflow writes this file into the release commit; use the action at a release tag (uses: OWNER/ai-infra-build@v1)"
fi

# What the ref says: exact (v1.2.3), prefix (v1, v1.2), commit (a SHA), or nothing.
ref_exact="" ref_prefix="" ref_commit=""
if [[ ${ref#v} =~ $semver ]]; then
  ref_exact=${ref#v}
elif [[ $ref =~ ^v?[0-9]+(\.[0-9]+)?$ ]]; then
  ref_prefix=${ref#v}
elif [[ $ref =~ ^[0-9a-f]{40}$ || $ref =~ ^[0-9a-f]{64}$ ]]; then
  ref_commit=$ref
fi
pin_help="pin a release: uses: OWNER/ai-infra-build@vX.Y.Z, the commit that tag names (git rev-parse vX.Y.Z^{commit}), or @v1"

if [ -n "$requested" ]; then
  version=${requested#v}
  why="the version input"
elif [ -n "$named" ]; then
  version=$named
  why="dist/VERSION"
  if [ -n "$ref" ]; then why="$why at the action's ref $ref"; fi
elif [ -n "$ref_commit" ]; then
  die "the action's ref $ref_commit is a commit that names no release (it has no dist/VERSION): it is not a release commit, so there is no binary made for its files" \
    "$pin_help"
elif [ -n "$ref_exact$ref_prefix" ]; then
  die "the action's ref $ref names a release, but its commit has no dist/VERSION: it is not a release commit made by the release workflow (docs/releasing.md)" \
    "check that the tag $ref is the one the release workflow pushed, or use another release ($pin_help)"
else
  die "this checkout of the action names no released version (dist/VERSION is missing) and the version input is empty" \
    "$pin_help" "or, for a checkout that is not a release (a branch, uses: ./), set version: to one whose checksums are in dist/checksums: $(known_versions)"
fi

# The checks: every name of the version must agree.
if [ -n "$named" ] && [ "$version" != "$named" ]; then
  at=""
  if [ -n "$ref" ]; then at=" at the action's ref $ref"; fi
  die "the version input $version differs from the version this action's files were released with ($named, dist/VERSION$at); refusing to run one release's action with another release's binary" \
    "leave version: empty to install $named, or use the action of $version: uses: OWNER/ai-infra-build@v$version"
fi
if [ -n "$ref_exact" ] && [ "$version" != "$ref_exact" ]; then
  die "the action's ref $ref names version $ref_exact, but this checkout of the action installs $version ($why); refusing a mismatch between the action's ref and its binary" \
    "the tag $ref does not name its release commit (moved, or made by hand): use the tag the release workflow pushed, or the commit it names" \
    "$pin_help"
fi
if [ -n "$ref_prefix" ] && [[ $version != "$ref_prefix".* ]]; then
  die "the action's ref $ref names versions $ref_prefix.*, but this checkout of the action installs $version ($why); refusing a mismatch between the action's ref and its binary" \
    "the tag $ref was moved to a commit of another release line: use an exact release tag until it is fixed" \
    "$pin_help"
fi
asset="ai-infra-build-$version-$target.tar.gz"
inner="ai-infra-build-$version-$target/ai-infra-build"
log "version $version (from $why), target $target"

# --- the committed checksums (fail closed) ----------------------------------------------------
sums="$dist_dir/checksums/$version.sha256"
[ -f "$sums" ] || die "no committed checksums for version $version ($sums is missing); refusing to install an unverified binary" \
  "versions this checkout of the action can verify: $(known_versions)" \
  "every release commit carries its own version's checksums (docs/releasing.md): $pin_help"
expected() { # NAME -> the committed hash, or empty
  awk -v name="$1" '{ n = $2; sub(/^\*/, "", n) } n == name { print tolower($1); exit }' "$sums"
}
want_asset=$(expected "$asset")
want_bin=$(expected "$inner")
[[ $want_asset =~ ^[0-9a-f]{64}$ && $want_bin =~ ^[0-9a-f]{64}$ ]] ||
  die "$sums has no SHA-256 for $asset and $inner; refusing to install an unverified binary" \
    "the release of $version may not include $target; versions this checkout knows: $(known_versions)"

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | awk '{ print $1 }'
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | awk '{ print $1 }'
  else
    openssl dgst -sha256 -r "$1" | awk '{ print $1 }'
  fi
}
verify() { # FILE EXPECTED WHAT
  local got
  got=$(sha256 "$1")
  if [ "$got" != "$2" ]; then
    die "checksum mismatch for $3: expected sha256 $2, got $got; refusing to use it" \
      "the file was altered or truncated (by a proxy or mirror on the way, or on disk): delete it and run again" \
      "if a fresh download keeps failing the check, something between you and the release alters it; see $docs"
  fi
}

# --- where it goes ------------------------------------------------------------------------
tmp_root=${RUNNER_TEMP:-${TMPDIR:-/tmp}}
work=$(mktemp -d "$tmp_root/ai-infra-build-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -n "${RUNNER_TOOL_CACHE:-}" ]; then
  cache_dir="$RUNNER_TOOL_CACHE/ai-infra-build/$version/$arch"
else
  cache_dir=""
fi
install_dir=${AIB_INSTALL_DIR:-${cache_dir:-$tmp_root/ai-infra-build/$version}}

# The verified binary runs, and is the version whose checksums it matched.
check_runs() { # BIN
  local out
  out=$("$1" --version 2>&1) || die "the verified binary does not run on this machine: $out" \
    "check that the runner is $target (uname -m says $machine)"
  out=$(printf '%s' "$out" | head -n 1 | tr -cd '[:alnum:] .+-')
  [ "$out" = "ai-infra-build $version" ] || die "the binary that matched the committed checksums of $version says it is '$out'; refusing a mismatch between the action's version and its binary" \
    "the checksums committed for $version belong to another build, so this release commit is broken: use another release, and report it ($docs)"
}

finish() { # DIR SOURCE
  local bin="$1/ai-infra-build"
  log "installed ai-infra-build $version from $2: $bin"
  if [ -n "${GITHUB_PATH:-}" ]; then echo "$1" >>"$GITHUB_PATH"; fi
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    {
      echo "path=$bin"
      echo "version=$version"
      echo "target=$target"
      echo "source=$2"
    } >>"$GITHUB_OUTPUT"
  fi
  echo "$bin"
  exit 0
}

# Unpacks a verified archive and puts its verified binary into the install directory.
install_archive() { # ARCHIVE SOURCE
  verify "$1" "$want_asset" "$asset ($2)"
  mkdir -p "$work/x"
  tar -xzf "$1" -C "$work/x" "$inner" 2>"$work/tar.err" ||
    die "$asset ($2) does not hold $inner: $(cat "$work/tar.err")"
  verify "$work/x/$inner" "$want_bin" "$inner ($2)"
  chmod 0755 "$work/x/$inner"
  check_runs "$work/x/$inner"
  if ! mkdir -p "$install_dir" 2>/dev/null || [ ! -w "$install_dir" ]; then
    log "cannot write to $install_dir; installing into the runner's temp directory instead"
    install_dir="$tmp_root/ai-infra-build/$version"
    mkdir -p "$install_dir" || die "cannot create $install_dir"
  fi
  # Rename into place, so a concurrent job never sees a half-written binary.
  cp "$work/x/$inner" "$install_dir/.ai-infra-build.$$"
  mv -f "$install_dir/.ai-infra-build.$$" "$install_dir/ai-infra-build"
  if [ -n "$cache_dir" ] && [ "$install_dir" = "$cache_dir" ]; then
    : >"$cache_dir.complete"
  fi
  finish "$install_dir" "$2"
}

# 1. The tool cache: a binary some earlier job (or the runner's image) put there.
if [ -n "$cache_dir" ] && [ -f "$cache_dir/ai-infra-build" ]; then
  verify "$cache_dir/ai-infra-build" "$want_bin" "the tool cache's $cache_dir/ai-infra-build"
  chmod 0755 "$cache_dir/ai-infra-build" 2>/dev/null || true
  check_runs "$cache_dir/ai-infra-build"
  finish "$cache_dir" tool-cache
fi

# 2. Shipped inside the action's checkout.
if [ -f "$dist_dir/$asset" ]; then
  install_archive "$dist_dir/$asset" dist
fi

# 3. A download.
tag="v$version"
if [ -n "${AIB_BINARY_URL:-}" ]; then
  url=$AIB_BINARY_URL
  if [[ $url == *"{"*"}"* ]]; then
    url=${url//\{version\}/$version}
    url=${url//\{tag\}/$tag}
    url=${url//\{target\}/$target}
    url=${url//\{asset\}/$asset}
  else
    url="${url%/}/$asset"
  fi
  where="binary-url"
else
  repository=${AIB_ACTION_REPOSITORY:-${GITHUB_ACTION_REPOSITORY:-${GITHUB_REPOSITORY:-}}}
  [ -n "$repository" ] || die "no binary in the tool cache or in dist/, and no repository to download the release from" \
    "set binary-url: to a mirror of the release assets, or put $asset into the action's dist/"
  url="${GITHUB_SERVER_URL:-https://github.com}/$repository/releases/download/$tag/$asset"
  where="the GitHub release"
fi
# Credentials never go into the URL's log line, nor into an error.
shown=$(printf '%s' "$url" | sed -E 's#://[^/@]*@#://***@#')
# https only; plain http only for an explicit binary-url on the loopback interface.
url_scheme=$(printf '%s' "$url" | sed -nE 's#^([A-Za-z][A-Za-z0-9+.-]*)://.*#\1#p' | tr '[:upper:]' '[:lower:]')
url_host=$(printf '%s' "$url" | sed -nE 's#^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*@)?(\[[^]]*\]|[^/?#:]*).*#\2#p' | tr '[:upper:]' '[:lower:]')
protocols='=https'
case "$url_scheme" in
  https) ;;
  http)
    if [ "$where" = binary-url ] && [[ $url_host =~ ^(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost|\[::1\])$ ]]; then
      protocols='=http'
    else
      die "refusing to download over plain http: $shown ($where); only https is allowed, http only for a binary-url on this runner's loopback interface (127.0.0.1, localhost, [::1])" \
        "serve the mirror over https, or put $asset into the action's dist/ or the tool cache"
    fi
    ;;
  *) die "refusing to download from '$shown' ($where): only https URLs are allowed (http only on the loopback interface)" \
    "set binary-url: to an https base URL or template, e.g. https://mirror.example.com/ai-infra-build/{tag}/{asset}" ;;
esac
command -v curl >/dev/null 2>&1 || die "curl is needed to download $asset" \
  "install curl on the runner, or put $asset into the action's dist/ or the tool cache"
retry_flags=(--retry "${AIB_RETRIES:-5}" --retry-delay "${AIB_RETRY_DELAY:-2}" --retry-connrefused)
if curl --help all 2>/dev/null | grep -q -- --retry-all-errors; then
  retry_flags+=(--retry-all-errors)
fi
log "downloading $shown ($where)"
if ! curl --fail --location --silent --show-error \
  --proto "$protocols" --proto-redir '=https' \
  --connect-timeout "${AIB_CONNECT_TIMEOUT:-10}" --max-time "${AIB_MAX_TIME:-300}" \
  "${retry_flags[@]}" --output "$work/$asset" "$url" 2>"$work/curl.err"; then
  die "cannot download $shown: $(tail -n 3 "$work/curl.err" | tr '\n' ' ')" \
    "on a network that cannot reach github.com, set binary-url: to a mirror of the release assets" \
    "or put $asset into the action's dist/ (air-gapped runners that mirror the action repository)" \
    "see $docs"
fi
install_archive "$work/$asset" download
