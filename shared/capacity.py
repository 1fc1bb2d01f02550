"""Admission control: a capacity counter in DynamoDB that bounds live stacks, not dispatcher invocations.

The item ``pk = capacity#global`` holds ``active`` (the count), ``limit`` (MaxActiveStacks, changeable at run
time) and ``holders`` (the job ids holding a slot), which makes acquire and release idempotent per job: a
duplicate delivery shares its job's slot, and a second release is a no-op.
"""

from __future__ import annotations

from typing import Any

from shared.aws import error_code
from shared.errors import CapacityFullError

CAPACITY_KEY = {"pk": {"S": "capacity#global"}}


class CapacityCounter:
    def __init__(self, client: Any, table_name: str, *, default_limit: int) -> None:
        self._ddb = client
        self._table = table_name
        self._default_limit = default_limit

    def acquire(self, job_id: str) -> None:
        """Take a slot for ``job_id`` or raise CapacityFullError; holding one already is success."""
        for _ in range(2):
            try:
                self._ddb.update_item(
                    TableName=self._table,
                    Key=CAPACITY_KEY,
                    UpdateExpression="ADD #active :one, #holders :job",
                    ConditionExpression="#active < #limit AND NOT contains(#holders, :id)",
                    ExpressionAttributeNames={"#active": "active", "#limit": "limit", "#holders": "holders"},
                    ExpressionAttributeValues={
                        ":one": {"N": "1"},
                        ":job": {"SS": [job_id]},
                        ":id": {"S": job_id},
                    },
                )
                return
            except Exception as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
            state = self.state()
            if state is None:
                self._create(self._default_limit)
                continue
            if job_id in state["holders"]:
                return
            raise CapacityFullError(f"all {state['limit']} stack slots are taken")
        raise CapacityFullError("capacity item could not be initialised")

    def release(self, job_id: str) -> bool:
        """Give back ``job_id``'s slot; False if it held none (already released)."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=CAPACITY_KEY,
                UpdateExpression="ADD #active :minus DELETE #holders :job",
                ConditionExpression="contains(#holders, :id)",
                ExpressionAttributeNames={"#active": "active", "#holders": "holders"},
                ExpressionAttributeValues={
                    ":minus": {"N": "-1"},
                    ":job": {"SS": [job_id]},
                    ":id": {"S": job_id},
                },
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def state(self) -> dict[str, Any] | None:
        """``{"active", "limit", "holders"}`` or None before first use."""
        item = self._ddb.get_item(TableName=self._table, Key=CAPACITY_KEY, ConsistentRead=True).get("Item")
        if item is None:
            return None
        return {
            "active": int(item.get("active", {"N": "0"})["N"]),
            "limit": int(item.get("limit", {"N": str(self._default_limit)})["N"]),
            "holders": set(item.get("holders", {"SS": []})["SS"]),
        }

    def set_limit(self, limit: int) -> None:
        """Change MaxActiveStacks at run time (creates the item if needed)."""
        if limit < 1:
            raise ValueError("MaxActiveStacks must be at least 1")
        self._ddb.update_item(
            TableName=self._table,
            Key=CAPACITY_KEY,
            UpdateExpression="SET #limit = :limit, #active = if_not_exists(#active, :zero)",
            ExpressionAttributeNames={"#limit": "limit", "#active": "active"},
            ExpressionAttributeValues={":limit": {"N": str(limit)}, ":zero": {"N": "0"}},
        )

    def recount(self, live_job_ids: set[str], *, expected_active: int | None = None) -> bool:
        """Make the counter agree with the live records, so a lost release never shrinks capacity for good.

        With ``expected_active``, only if the count is still that (False when it moved meanwhile).
        """
        names = {"#active": "active", "#holders": "holders", "#limit": "limit"}
        values: dict[str, Any] = {
            ":n": {"N": str(len(live_job_ids))},
            ":default": {"N": str(self._default_limit)},
        }
        expression = "SET #active = :n, #limit = if_not_exists(#limit, :default)"
        if live_job_ids:
            values[":holders"] = {"SS": sorted(live_job_ids)}
            expression += ", #holders = :holders"
        else:
            expression += " REMOVE #holders"
        request: dict[str, Any] = {}
        if expected_active is not None:
            request["ConditionExpression"] = "#active = :expected"
            values[":expected"] = {"N": str(expected_active)}
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=CAPACITY_KEY,
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                **request,
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _create(self, limit: int) -> None:
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={**CAPACITY_KEY, "active": {"N": "0"}, "limit": {"N": str(limit)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
