"""Locations on any filesystem pyarrow opens: local paths, ``s3://bucket/prefix``, ``hdfs://``,
``file://`` URIs (``gs://`` and others pyarrow knows are opened too, untested).

Both the Ray engine's output folder and ``index build``'s streamed galleries go through these
helpers, so a laptop folder and a bucket behave alike. S3 credentials and endpoint come from the
standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``), ``~/.aws``, or instance metadata, as
the AWS SDK inside pyarrow finds them.

:func:`check_reachable` asks the store once before any work, so a missing or forbidden bucket, an
endpoint that does not answer or missing credentials are one line naming what to fix, not a failure
after the model was loaded.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterator, Tuple

from imgfeat_cli.common.errors import ImgfeatError, UsageError, from_os_error
from imgfeat_cli.common.paths import not_a_file

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

#: What pyarrow's S3 errors mean, in the words a user acts on (the AWS SDK's error names).
_S3_REASONS = (
    ("NO_SUCH_BUCKET", "the bucket does not exist"),
    ("ACCESS_DENIED", "access denied (the credentials may not read or write it)"),
    ("INVALID_ACCESS_KEY_ID", "the access key is not valid"),
    ("SIGNATURE_DOES_NOT_MATCH", "the secret key does not match the access key"),
    ("NETWORK_CONNECTION", "cannot connect to the endpoint"),
    ("curlCode", "cannot connect to the endpoint"),
)


def is_uri(text: str) -> bool:
    """A ``scheme://`` location that pyarrow opens (http(s) URLs are fetched as URLs instead)."""
    m = _SCHEME.match(text)
    return bool(m) and m.group(1).lower() not in ("http", "https")


def scheme(location: str) -> str:
    """``s3``, ``file``... for a URI; ``""`` for a local path."""
    m = _SCHEME.match(location)
    return m.group(1).lower() if m and is_uri(location) else ""


def short_error(exc: BaseException) -> str:
    """The first line of an exception, cut to a line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text if len(text) <= 160 else text[:160] + "..."


def _hint(location: str) -> str:
    if scheme(location) != "s3":
        return "check the URI (s3://bucket/prefix/, hdfs://, file:// are supported), the network and the credentials"
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    where = f"the endpoint {endpoint} (AWS_ENDPOINT_URL)" if endpoint else "AWS S3 (set AWS_ENDPOINT_URL for another store)"
    creds = any(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                                            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) \
        or os.path.exists(os.path.expanduser("~/.aws/credentials"))
    who = ("credentials from AWS_ACCESS_KEY_ID/AWS_PROFILE/~/.aws" if creds else
           "no credentials are set: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    return f"check the bucket name, {where} and the credentials ({who})"


def describe_error(location: str, exc: BaseException) -> ImgfeatError:
    """A one-line error for a store that refused or failed a request about ``location`` (a local
    file's: the usual one for its errno, exit 1 for permissions)."""
    if not is_uri(location) and isinstance(exc, OSError) and exc.errno:
        exc.filename = exc.filename or location
        return from_os_error(exc)
    text = str(exc)
    reason = next((why for key, why in _S3_REASONS if key in text), None)
    if reason is None:
        status = re.search(r"HTTP status (\d+)", text)
        reason = f"the store answered HTTP {status.group(1)}" if status else short_error(exc)
    return UsageError(f"cannot use {location}: {reason}", hint=_hint(location))


def resolve(location: str) -> Tuple[Any, str]:
    """``(filesystem, path)`` for a URI or a local path (made absolute)."""
    from pyarrow import fs

    if not is_uri(location):
        return fs.LocalFileSystem(), os.path.abspath(location)
    if scheme(location) == "s3" and not re.match(r"(?i)^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]([/?]|$)", location):
        raise UsageError(f"cannot open {location}: not an S3 location (s3://BUCKET/PREFIX, bucket names are "
                         "3-63 lowercase letters, digits, dots and dashes)", hint="e.g. s3://my-bucket/feats/")
    try:
        return fs.FileSystem.from_uri(location)
    except (ValueError, OSError) as exc:  # ArrowInvalid is a ValueError; unknown schemes, bad buckets
        raise UsageError(f"cannot open {location}: {short_error(exc)}", hint=_hint(location)) from None


def check_reachable(location: str, filesystem: Any = None, path: str = "") -> Any:
    """Ask the store about ``location`` once (its bucket for object stores), turning a refusal into
    a one-line :class:`UsageError`. Returns its ``FileInfo`` (``NotFound`` is an answer, not an error)."""
    if filesystem is None:
        filesystem, path = resolve(location)
    try:
        if scheme(location) in ("s3", "gs", "gcs"):
            from pyarrow import fs

            bucket = path.split("/", 1)[0]
            if filesystem.get_file_info(bucket).type == fs.FileType.NotFound:
                raise OSError("NO_SUCH_BUCKET")
        return filesystem.get_file_info(path)
    except OSError as exc:
        raise describe_error(location, exc) from None


def join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def uri_of(location: str, path: str) -> str:
    """The user-facing name of ``path`` found under ``location`` (a URI keeps its scheme)."""
    m = _SCHEME.match(location)
    if not m:
        return path
    if m.group(1).lower() == "file":
        return "file://" + path
    return f"{m.group(1)}://{path}"


def _listed(name: str, suffix: str) -> bool:
    return name.lower().endswith(suffix) and not name.startswith((".", "_"))


def iter_files(filesystem: Any, root: str, suffix: str) -> Iterator[Any]:
    """``FileInfo`` of the files directly under ``root`` named ``*suffix`` and not hidden (``.``/``_``,
    as Spark and pyarrow skip them), sorted by name. Anything else so named (a folder, a FIFO, a
    broken symlink) is refused by name rather than skipped: its rows would silently go missing."""
    from pyarrow import fs

    infos = [i for i in filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True))
             if _listed(i.base_name, suffix)]
    if isinstance(filesystem, fs.LocalFileSystem):  # pyarrow leaves broken symlinks and loops out
        seen = {i.base_name for i in infos}
        try:
            names = os.listdir(root)
        except OSError:
            names = []
        for name in sorted(n for n in names if _listed(n, suffix) and n not in seen):
            raise UsageError(f"{os.path.join(root, name)} {not_a_file(os.path.join(root, name))}",
                             hint=f"repair or remove it: every *{suffix} file in the folder is read")
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != fs.FileType.File:
            kind = "is a folder" if info.type == fs.FileType.Directory else \
                "is not a regular file (a FIFO, device or socket)"
            raise UsageError(f"{info.path} {kind}, in a folder of {suffix} files",
                             hint=f"rename or remove it: every *{suffix} entry in the folder is read as a file")
        yield info
