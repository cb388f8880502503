"""The model stage on Kafka: one task per partition of the partials topic (two-stage aggregation).

With ``aggregation.mode: two_stage`` each member of the group consumes three topics: partition ``p``
of the predictions and labels topics feeds the shard ``p`` (a ``PartitionTask`` whose engine
summarises windows into :class:`~stream_monitor.core.partials.ShardReport`\\ s), and the
reports go to the partials topic keyed by model id — the repartition step of Kafka Streams and Quix —
so every report of a model lands in one partition of it. The group's assignor hands out the partials
topic's partitions too: the member that owns partition ``q`` runs a :class:`StageTask`, whose
:class:`~stream_monitor.core.model_stage.ModelStage` merges the partials of the models keyed to ``q``
and judges each window once.

A stage task is checkpointed like a partition-task (:mod:`stream_monitor.kafka.checkpoint`): its state
(open windows' partials, which shard sent which, the policy) and the next offset of its partials
partition go to the state topic under its own key, then the offset is committed. After a crash the
reports since then are read again; a report already merged is recognised by ``(window, shard)`` and
counted as a duplicate, never merged twice. Reports are signed with the state key when one is
configured (:mod:`stream_monitor.kafka.signing`): a forged or garbled report is dead-lettered and
counted, never merged.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Message, TopicPartition

from stream_monitor.core.model_stage import ModelStage
from stream_monitor.core.monitor import MonitorOutput
from stream_monitor.core.partials import PerformanceStats, ShardReport, new_stats
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.errors import StateError
from stream_monitor.kafka.signing import RecordRejected, StateSigner
from stream_monitor.kafka.state import StateBlobs, StateCapture, StateRecord, state_key

log = logging.getLogger("stream_monitor.kafka.aggregation")

ROLE = "partials"
#: Dead-letter reason of a record on the partials topic that is not a report this service can merge.
BAD_PARTIAL = "bad_partial"


def stage_key(group: str, partition: int) -> bytes:
    """The changelog key of the stage task of partials partition ``partition`` (apart from the
    partition-tasks' keys, which are ``group/p``)."""
    return state_key(f"{group}/model-stage", partition)


class StageTask:
    """The model stage of one partition of the partials topic (see the module docstring)."""

    def __init__(
        self,
        partition: int,
        stage: ModelStage,
        topic: str,
        schemas: dict[str, ModelSchema],
        references: dict[str, ReferenceProfile],
    ) -> None:
        self.partition = partition
        self.stage = stage
        self.topic = topic
        self.schemas = schemas
        self.references = references
        self._stats: dict[str, PerformanceStats] = {m: new_stats(s) for m, s in schemas.items()}
        self.offsets: dict[str, int | None] = {ROLE: None}
        self.counts: dict[str, int] = {"reports": 0, "rejected": 0, "triggers": 0, "windows": 0}
        self.dirty = False
        self.restored_digest: str | None = None
        self.checkpointed_digest: str | None = None
        self.state_blobs = StateBlobs()

    def changelog_key(self, group: str) -> bytes:
        return stage_key(group, self.partition)

    def decode(self, message: Message, signer: StateSigner) -> ShardReport:
        """A report from a record; :class:`StateError` (or :class:`RecordRejected`) when it is not one."""
        raw = message.value()
        if raw is None:
            raise StateError("an empty record")
        opened = signer.open(message.key() or b"", raw)
        report = ShardReport.decode(opened, self.schemas, self.references, self._stats)
        if (message.key() or b"") != report.model_id.encode():
            raise StateError(f"a report of model {report.model_id!r} under key {message.key()!r}")
        return report

    def process(
        self, messages: list[Message], signer: StateSigner, wall_now: float
    ) -> tuple[dict[str, MonitorOutput], list[tuple[Message, str]]]:
        """Merge a batch of records and judge what is ready; also the records refused, with why."""
        reports: list[ShardReport] = []
        refused: list[tuple[Message, str]] = []
        for message in messages:
            try:
                reports.append(self.decode(message, signer))
            except (StateError, RecordRejected) as exc:
                log.error(
                    "%s[%d]@%d is not a shard report this member can merge (%s): dead-lettered as %s",
                    message.topic(),
                    message.partition() or 0,
                    message.offset() or 0,
                    exc,
                    BAD_PARTIAL,
                )
                refused.append((message, BAD_PARTIAL))
        outputs = self.stage.process(reports, wall_now)
        self._count(outputs, len(reports), len(refused))
        if messages:
            self.offsets[ROLE] = (messages[-1].offset() or 0) + 1
        self.dirty = True
        return outputs, refused

    def tick(self, wall_now: float) -> dict[str, MonitorOutput]:
        """Judge windows whose silent shards reached the idle timeout (no report needed)."""
        outputs = self.stage.tick(wall_now)
        if outputs:
            self._count(outputs, 0, 0)
            self.dirty = True
        return outputs

    def _count(self, outputs: dict[str, MonitorOutput], reports: int, refused: int) -> None:
        self.counts["reports"] += reports
        self.counts["rejected"] += refused
        self.counts["triggers"] += sum(len(o.triggers) for o in outputs.values())
        self.counts["windows"] += sum(len(o.evaluations) for o in outputs.values())

    def restore(self, record: StateRecord) -> None:
        self.stage.restore(record.snapshot)
        self.offsets = {ROLE: record.offsets.get(ROLE)}
        self.counts.update({k: v for k, v in record.counts.items() if k in self.counts})
        self.restored_digest = self.checkpointed_digest = record.digest
        self.state_blobs = StateBlobs.of(record)

    def state_capture(self, group: str, now: float, *, freeze: bool) -> StateCapture:
        return StateCapture.of(
            f"{group}/model-stage",
            self.partition,
            self.offsets,
            self.counts,
            self.stage.to_state(),
            now,
            freeze=freeze,
        )

    def state_record(self, group: str, now: float) -> StateRecord:
        record = self.state_capture(group, now, freeze=False).record()
        self.checkpointed_digest = record.digest
        return record

    def commit_offsets(self) -> list[TopicPartition]:
        off = self.offsets[ROLE]
        return [] if off is None else [TopicPartition(self.topic, self.partition, off)]

    def describe(self) -> dict[str, Any]:
        """For ``/state``: offsets, counts and, per model, what the stage holds."""
        return {
            "partition": self.partition,
            "offsets": dict(self.offsets),
            "counts": dict(self.counts),
            "models": {
                m: {
                    "open_windows": len(j.open),
                    "windows_judged": j.windows_judged,
                    "shards": j.shards,
                    "progress": {str(s): p for s, p in sorted(j.progress.items())},
                    "partials": dict(j.counts),
                }
                for m, j in sorted(self.stage.judges.items())
            },
            "checkpointed_digest": self.checkpointed_digest,
            "restored_digest": self.restored_digest,
        }
