"""File operations through Hadoop's FileSystem, so the same code works on local disk, s3a, abfss, dbfs and hdfs.

Only for bounded work on the driver: listing, a marker file, renames, deleting a scratch folder, a file's first bytes.
"""

from __future__ import annotations

from pyspark.sql import SparkSession


def hadoop_path(spark: SparkSession, path: str):
    """(org.apache.hadoop.fs.Path, its FileSystem)."""
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p, p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def exists(spark: SparkSession, path: str) -> bool:
    p, fs = hadoop_path(spark, path)
    return bool(fs.exists(p))


def head_bytes(spark: SparkSession, path: str, n: int) -> tuple[int, ...]:
    p, fs = hadoop_path(spark, path)
    stream = fs.open(p)
    try:
        return tuple(stream.read() for _ in range(n))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str) -> str | None:
    """A small file's text, or None if it does not exist."""
    p, fs = hadoop_path(spark, path)
    if not fs.exists(p):
        return None
    stream = fs.open(p)
    try:
        return spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def write_text(spark: SparkSession, path: str, text: str) -> None:
    p, fs = hadoop_path(spark, path)
    stream = fs.create(p, True)
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()


def rename_suffix(spark: SparkSession, folder: str, old: str, new: str) -> None:
    """Rename the files of ``folder`` ending in ``old`` to end in ``new``."""
    p, fs = hadoop_path(spark, folder)
    for st in fs.listStatus(p):
        name = st.getPath().getName()
        if name.endswith(old):
            fs.rename(st.getPath(), hadoop_path(spark, f"{folder}/{name[: -len(old)]}{new}")[0])


def delete(spark: SparkSession, path: str) -> None:
    p, fs = hadoop_path(spark, path)
    if fs.exists(p):
        fs.delete(p, True)
