"""A local filesystem for Ray Tune's storage whose files appear whole or not at all.

Ray copies its experiment state (experiment_state-*.json, search_gen_state-*.json,
searcher-state-*.pkl) from a staging folder into the storage every few seconds, every file
each time, old runs' files too, and each copy truncates the file first. A kill during such a
copy leaves an empty file, which Ray cannot restore: it goes on with no trials and saves
that empty state as the newest, so every later resume ends at once (docs/failures.md). Here
every file written to the storage goes to a temporary name in its folder and is renamed
over the old one when complete, so a kill leaves the old file or the new one.

Given to Ray through its public `storage_filesystem` (RunConfig, Tuner.restore); local
storage only: an object store (s3://) writes each object whole already.
"""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pyarrow.fs as pafs

# a file being written: `<name>.partial-<random>`, which matches none of Ray's patterns (nor
# the .json/.pkl files a restore downloads)
PARTIAL = ".partial-"


class _Whole:
    """A file object that writes to a temporary name and takes its real name on close."""

    def __init__(self, path: str):
        folder, name = os.path.split(path)
        self.path, self.partial = path, os.path.join(folder, f"{name}{PARTIAL}{uuid.uuid4().hex}")
        self.handle = open(self.partial, "wb")  # noqa: SIM115 (closed by close())
        self.closed = self.failed = False

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError:  # a full disk: the old file stays, the cut one never takes its name
            self.failed = True
            raise

    def tell(self) -> int:
        return self.handle.tell()

    def flush(self) -> None:
        try:
            self.handle.flush()
        except OSError:
            self.failed = True
            raise

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.handle.close()
        except OSError:
            self.failed = True
            raise
        finally:
            if self.failed:
                os.unlink(self.partial)
            else:
                os.replace(self.partial, self.path)


class WholeFileHandler(pafs.FileSystemHandler):
    """pyarrow's LocalFileSystem, except that written files appear whole (see above)."""

    def __init__(self):
        self.local = pafs.LocalFileSystem()

    def __reduce__(self):  # Ray sends the storage to every trial's worker
        return (WholeFileHandler, ())

    def equals(self, other) -> bool:
        return isinstance(other, WholeFileHandler)

    def get_type_name(self) -> str:
        return "tune_mnist-whole-files"

    def normalize_path(self, path):
        return self.local.normalize_path(path)

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the contents of /")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        with self.local.open_input_stream(src) as source:
            output = self.open_output_stream(dest, None)
            try:
                while chunk := source.read(1 << 20):
                    output.write(chunk)
            finally:
                output.close()

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return pa.PythonFile(_Whole(path), mode="w")

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path)


def storage_filesystem(storage: str):
    """The filesystem to hand Ray for this storage root: whole-file writes for a local path,
    None (Ray's own choice) for a URI such as s3://."""
    if "://" in storage:
        return None
    return pafs.PyFileSystem(WholeFileHandler())
