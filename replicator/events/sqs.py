"""S3 event notifications delivered to an SQS queue (`[jobs.events] kind = "sqs"`).

The bucket sends `s3:ObjectCreated:*` and `s3:ObjectRemoved:*` to the queue (docs/OPERATIONS.md);
this module long-polls the queue, turns each message's `Records` into Events for the job's
bucket and prefix, and deletes messages only when `ack`ed (after the snapshot covering them).
S3 writes keys URL-encoded with `+` for a space; a message relayed by SNS is unwrapped; the
`s3:TestEvent` S3 sends when the notification is configured carries no event.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from replicator.errors import SourceError
from replicator.events.base import CREATED, REMOVED, Event, Message
from replicator.redact import redact

log = logging.getLogger("replicator.events")

OPTIONS = ("endpoint_url", "key", "secret", "token", "region")


class SqsEvents:
    def __init__(self, queue_url: str, options: dict[str, Any], source_url: str, visibility_timeout: int = 300):
        import botocore.config
        import botocore.session

        self.queue_url = queue_url
        self.visibility_timeout = visibility_timeout
        self.bucket, self.prefix = _bucket_prefix(source_url)
        self.description = f"sqs {queue_url}"
        client_kwargs = options.get("client_kwargs") or {}
        endpoint = options.get("endpoint_url") or client_kwargs.get("endpoint_url")
        region = (options.get("region") or client_kwargs.get("region_name") or _region_of(queue_url)
                  or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
        creds = {}
        if options.get("key"):
            creds = {"aws_access_key_id": options["key"], "aws_secret_access_key": options.get("secret"),
                     "aws_session_token": options.get("token")}
        try:
            self.client = botocore.session.get_session().create_client(
                "sqs", region_name=region, endpoint_url=endpoint, **creds,
                config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 5},
                                              connect_timeout=10, read_timeout=40))
        except Exception as e:  # botocore raises many kinds for bad options
            raise SourceError(f"{self.description}: cannot make a client: {redact(str(e))}") from None

    # -- the protocol ------------------------------------------------------------------------

    def receive(self, wait: float, max_messages: int = 10) -> list[Message]:
        out = self._call("receive_message", QueueUrl=self.queue_url, MaxNumberOfMessages=max(1, min(max_messages, 10)),
                         WaitTimeSeconds=max(0, min(int(wait), 20)), VisibilityTimeout=self.visibility_timeout)
        messages = []
        for m in out.get("Messages", []):
            events = self.parse(m.get("Body", ""), m.get("MessageId", ""))
            messages.append(Message(handle=m["ReceiptHandle"], events=events, id=m.get("MessageId", "")))
        return messages

    def ack(self, messages: list[Message]) -> None:
        self._batch("delete_message_batch", messages, lambda m: {})

    def release(self, messages: list[Message]) -> None:
        try:
            self._batch("change_message_visibility_batch", messages, lambda m: {"VisibilityTimeout": 0})
        except SourceError as e:  # they come back after the visibility timeout anyway
            log.warning("%s", e)

    def check(self) -> str:
        out = self._call("get_queue_attributes", QueueUrl=self.queue_url,
                         AttributeNames=["ApproximateNumberOfMessages", "VisibilityTimeout"])
        n = out.get("Attributes", {}).get("ApproximateNumberOfMessages", "?")
        return f"queue reachable ({n} messages waiting)"

    # -- parsing ---------------------------------------------------------------------------------

    def parse(self, body: str, message_id: str = "") -> list[Event]:
        """The events of one message body for this job's bucket and prefix; [] for a test event or
        one about another bucket. A body that is not an S3 notification is logged and yields []."""
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and doc.get("Type") == "Notification" and "Message" in doc:
                doc = json.loads(doc["Message"])  # relayed by an SNS topic
        except (ValueError, TypeError):
            log.warning("%s: message %s is not JSON; ignored (the scheduled run reconciles)", self.description, message_id)
            return []
        if not isinstance(doc, dict):
            return []
        if doc.get("Event") == "s3:TestEvent":
            return []
        records = doc.get("Records")
        if not isinstance(records, list):
            log.warning("%s: message %s is not an S3 event notification; ignored", self.description, message_id)
            return []
        events = []
        for r in records:
            try:
                ev = self._event(r)
            except (KeyError, TypeError, ValueError) as e:
                log.warning("%s: message %s has a malformed record (%s); ignored", self.description, message_id, e)
                continue
            if ev is not None:
                events.append(ev)
        return events

    def _event(self, r: dict) -> Event | None:
        name = r["eventName"]
        if name.startswith("s3:"):
            name = name[3:]
        if name.startswith("ObjectCreated:"):
            kind = CREATED
        elif name.startswith(("ObjectRemoved:", "LifecycleExpiration:")):
            kind = REMOVED
        else:
            return None  # tagging, ACL, restore, transitions: the content did not change
        s3 = r["s3"]
        if s3["bucket"]["name"] != self.bucket:
            return None
        key = unquote_plus(s3["object"]["key"])
        if self.prefix:
            if not key.startswith(self.prefix + "/"):
                return None
            key = key[len(self.prefix) + 1:]
        if not key or key.endswith("/"):
            return None
        obj = s3["object"]
        return Event(key=key, kind=kind, time=_time(r["eventTime"]), sequencer=obj.get("sequencer"),
                     etag=obj.get("eTag"))

    # -- calls -----------------------------------------------------------------------------------

    def _call(self, op: str, **kw) -> dict:
        try:
            return getattr(self.client, op)(**kw)
        except Exception as e:
            raise SourceError(f"{self.description}: {op} failed: {redact(str(e))[:300]}") from None

    def _batch(self, op: str, messages: list[Message], extra) -> None:
        for i in range(0, len(messages), 10):
            part = messages[i:i + 10]
            entries = [{"Id": str(n), "ReceiptHandle": m.handle, **extra(m)} for n, m in enumerate(part)]
            out = self._call(op, QueueUrl=self.queue_url, Entries=entries)
            failed = out.get("Failed") or []
            if failed:
                raise SourceError(f"{self.description}: {op}: {len(failed)} of {len(part)} failed "
                                  f"({failed[0].get('Code')}: {failed[0].get('Message', '')[:200]})")


def _bucket_prefix(source_url: str) -> tuple[str, str]:
    rest = source_url.split("://", 1)[1] if "://" in source_url else source_url
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def _region_of(queue_url: str) -> str | None:
    """https://sqs.REGION.amazonaws.com/ACCOUNT/NAME (or the legacy REGION.queue.amazonaws.com)."""
    host = urlsplit(queue_url).hostname or ""
    m = re.fullmatch(r"sqs\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?", host) or re.fullmatch(r"([a-z0-9-]+)\.queue\.amazonaws\.com", host)
    return m.group(1) if m else None


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
