"""Models: `GET /models/{id}` for every model whose schema ships with batchgen."""

from __future__ import annotations

from aiohttp import web

from ..core.schema import to_json
from . import shapes
from .answers import error
from .world import World

_CREATED = 1767225600.0  # 2026-01-01: when the simulator's catalogue says its models were made


class ModelsApi(World):
    """The model catalogue: each shipped schema (or `catalog`'s) as the API describes a model."""

    async def get_model(self, request: web.Request) -> web.Response:
        schema = self.schema(request.match_info["model_id"])
        if schema is None:
            return error(404, "model not found")
        return web.json_response({"model": shapes.model(to_json(schema), created=_CREATED)})
