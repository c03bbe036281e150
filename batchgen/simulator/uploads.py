"""Uploads: `POST /uploads`, the signed part URL, `complete`, `GET /uploads/{id}`."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from . import shapes
from .answers import error, json_body
from .model import SimAsset, SimJob, SimUpload
from .world import World


class UploadsApi(World):
    """Uploads as the SDK describes them: create, PUT the part, complete, poll until imported."""

    async def create_upload(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if body is None or body.get("kind") != "audio" or not isinstance(body.get("fileName"), str):
            return error(400, "kind must be audio and fileName is required")
        upload_id = self._id("upload")
        upload = SimUpload(upload_id, body["fileName"], body.get("fileSize"), body.get("contentType"), time.time())
        upload.project, upload.updated = request.query.get("projectId"), upload.created
        self.uploads[upload_id] = upload
        base = f"{request.scheme}://{request.host}"
        upload.part_url = f"{base}/upload-parts/{upload_id}/1"
        return web.json_response({"upload": self._upload_json(upload)})

    def _upload_json(self, upload: SimUpload) -> dict[str, Any]:
        """An upload in the SDK's `Upload` shape; `validating` for a moment after complete, then `imported`."""
        if upload.status == "validating" and self.now() - upload.completed >= self.upload_time:
            self._import(upload)
        pending = upload.status == "pending"
        return shapes.upload(
            upload.id,
            file_name=upload.file_name,
            status=upload.status,
            created=upload.created,
            updated=upload.updated,
            size=upload.size,
            content_type=upload.content_type,
            part_url=upload.part_url if pending else None,
            part_expires=time.time() + 3600 if pending else None,
            entity_id=upload.asset_id,
            job_id=upload.job_id,
            error=upload.error,
            owner=upload.project,
        )

    def _import(self, upload: SimUpload) -> None:
        data = upload.data or b""
        if not (data[:4] == b"RIFF" and data[8:12] == b"WAVE"):
            upload.status, upload.error = "failed", "the file is not audio this service can read"
        else:
            asset = SimAsset(id=self._id("asset"), prompt="", seed=0, duration=0.0, channels=1, data=data)
            asset.project, asset.created = upload.project, time.time()
            self.assets[asset.id] = asset
            upload.status, upload.asset_id = "imported", asset.id
        upload.updated = time.time()

    async def put_part(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["upload_id"])
        if upload is None:
            return web.Response(status=404)
        if "Authorization" in request.headers:
            return web.Response(status=400, text="signed URLs take no Authorization header")
        upload.data = await request.read()
        return web.Response(status=200, headers={"ETag": '"part-1"'})

    async def get_upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["upload_id"])
        if upload is None or upload.project != request.query.get("projectId"):
            return error(404, "upload not found")
        return web.json_response({"upload": self._upload_json(upload)})

    async def upload_action(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["upload_id"])
        if upload is None or upload.project != request.query.get("projectId"):
            return error(404, "upload not found")
        body = await json_body(request)
        if body is None or body.get("action") != "complete":
            return error(400, "unknown action")
        if upload.data is None:
            return error(400, "upload has no parts yet")
        if upload.status == "pending":
            upload.status, upload.completed, upload.updated = "validating", self.now(), time.time()
            if self.faults.upload_job:  # the older flow: a job that imports the file
                self._import(upload)
                job = SimJob(
                    id=self._id("job"),
                    kind="upload",
                    params={"fileName": upload.file_name},
                    created_wall=time.time(),
                    started=self.now(),
                    job_time=min(self.job_time, 0.2),
                    cost=0.0,
                    asset_ids=[upload.asset_id] if upload.asset_id else [],
                )
                self.jobs[job.id] = job
                upload.job_id, upload.status = job.id, "complete"
        return web.json_response({"upload": self._upload_json(upload)})
