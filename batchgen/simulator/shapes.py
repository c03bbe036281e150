"""The simulator's answers in the shapes the official SDK's models require (strict mode).

`scenario-sdk` 2.4.0 (generated from Scenario's OpenAPI spec) is the one independent
description of the API: its `Job`, `Asset` and `Upload` models say which fields are
required and which values an enum takes. The contract test validates every answer
below against them.
"""

from __future__ import annotations

from typing import Any

from ..scenario.models import iso

AUTHOR, OWNER = "sim-user", "sim-team"  # the SDK requires authorId and ownerId on everything


def job(
    job_id: str,
    *,
    kind: str,
    status: str,
    progress: float,
    history: list[tuple[str, float]],
    params: dict[str, Any],
    asset_ids: list[str],
    cost: float,
    refundable: bool,
    error: str | None,
    created: float,
    updated: float,
    discount: float = 0.0,
    owner: str | None = None,
) -> dict[str, Any]:
    """A `Job`: jobType from the SDK's enum (`custom` for a generation, `upload` for an import)."""
    meta: dict[str, Any] = {"input": params, "assetIds": asset_ids if status == "success" else []}
    if status == "failure":
        meta["error"] = error or "GPU worker crashed while generating (simulated)"
    if kind == "upload" and status == "success" and asset_ids:
        meta["output"] = {"entityId": asset_ids[0]}
    # As the SDK documents: cuCost shows the main action's charge even for a failed job;
    # whether it was given back is disableRefund's to say.
    billing: dict[str, Any] = {"cuCost": cost, "cuDiscount": discount}
    if not refundable:
        billing["disableRefund"] = True
    return {
        "jobId": job_id,
        "jobType": "custom" if kind == "generate" else "upload",
        "status": status,
        "statusHistory": [{"date": iso(at), "status": name} for name, at in history],
        "progress": progress,
        "metadata": meta,
        "billing": billing,
        "createdAt": iso(created),
        "updatedAt": iso(updated),
        "authorId": AUTHOR,
        "ownerId": owner or OWNER,
    }


def asset(
    asset_id: str,
    *,
    url: str,
    size: int,
    duration: float,
    channels: int,
    rate: int,
    uploaded: bool,
    created: float,
    owner: str | None = None,
    mime: str = "audio/wav",
) -> dict[str, Any]:
    """An `Asset` of kind audio: generated (`txt2audio`) or imported from an upload (`uploaded-audio`)."""
    source = "uploaded-audio" if uploaded else "txt2audio"
    return {
        "id": asset_id,
        "url": url,
        "mimeType": mime,
        "kind": "audio",
        "status": "success",
        "source": source,
        "metadata": {"kind": "audio", "type": source},
        "properties": {"size": size, "duration": duration, "channels": channels, "sampleRate": rate},
        "privacy": "private",
        "tags": [],
        "collectionIds": [],
        "editCapabilities": [],
        "authorId": AUTHOR,
        "ownerId": owner or OWNER,
        "createdAt": iso(created),
        "updatedAt": iso(created),
    }


def upload(
    upload_id: str,
    *,
    file_name: str,
    status: str,
    created: float,
    updated: float,
    size: object = None,
    content_type: object = None,
    part_url: str | None = None,
    part_expires: float | None = None,
    entity_id: str | None = None,
    job_id: str | None = None,
    error: str | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """An `Upload`: parts while pending, `entityId` once imported, `errorMessage` when failed."""
    out: dict[str, Any] = {
        "id": upload_id,
        "authorId": AUTHOR,
        "ownerId": owner or OWNER,
        "createdAt": iso(created),
        "updatedAt": iso(updated),
        "fileName": file_name,
        "kind": "audio",
        "source": "multipart",
        "status": status,
        "partsCount": 1,
    }
    if isinstance(content_type, str):
        out["contentType"] = content_type
    if isinstance(size, int | float) and not isinstance(size, bool):
        out["fileSize"] = size
    if part_url is not None and part_expires is not None:
        out["parts"] = [{"number": 1, "url": part_url, "expires": iso(part_expires)}]
    for key, value in (("entityId", entity_id), ("jobId", job_id), ("errorMessage", error)):
        if value is not None:
            out[key] = value
    return out


def model(schema: dict[str, Any], *, created: float) -> dict[str, Any]:
    """A `Model` as `GET /models/{id}` answers: a public, ready text-to-audio model with its inputs."""
    out: dict[str, Any] = {
        "id": schema["id"],
        "capabilities": ["txt2audio"],
        "collectionIds": [],
        "createdAt": iso(created),
        "updatedAt": iso(created),
        "custom": True,  # used through POST /generate/custom/{modelId}
        "exampleAssetIds": [],
        "privacy": "public",
        "source": "other",
        "status": "trained",
        "tags": [],
        "trainingImagesNumber": 0,
        "type": "custom",
        "inputs": schema["inputs"],
    }
    if "name" in schema:
        out["name"] = schema["name"]
    if schema.get("disableRefund"):
        out["disableRefund"] = True
    return out
