"""Running one corpus as many partitions: Ray workers, or independent processes from a batch scheduler."""

from interplay.common.partition import Partition, partition_of

__all__ = ["Partition", "partition_of"]
