"""``t2i serve``: a local page to try a trained generator (FastAPI + uvicorn: the ``demo`` extra).

The generator, its text encoder and, when there is one, the evaluator are loaded once by
``Demo``; each request then only encodes its caption and runs the generator. Nothing is written
to disk: images go back to the page as PNG data URLs. Bad input (an empty caption, n out of
range) is answered with ``{"error": "..."}`` and HTTP 400, which the page shows; an over-long
caption is cut, and the answer says where.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from t2i import T2IError
from t2i.data.loader import to_uint8
from t2i.data.raw import check_captions, one_line
from t2i.families import arch_of
from t2i.grid import gan_int_strip

MAX_CAPTION = 300  # characters; longer captions are cut at the last space before this
MAX_IMAGES = 64
STATIC = Path(__file__).parent / "static"


def png_data_url(image: torch.Tensor) -> str:
    """(3, S, S) in [-1, 1] -> ``data:image/png;base64,...``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class Demo:
    """A trained generator with its text encoder, and optionally the evaluator and the run's
    metrics, loaded once."""

    def __init__(self, generator: Path, *, evaluator: Path | None = None, metrics: Path | None = None,
                 device: str = "cpu", name: str | None = None) -> None:
        from t2i.generate import load_with_text
        from t2i.device import pick_device

        self.device = pick_device(device)
        # A missing or unreadable file is a one-line error here, before the server starts.
        self.G, self.config, self.encoder = load_with_text(generator, self.device)
        self.evaluator = None
        if evaluator is not None and Path(evaluator).is_file():
            from t2i.evaluator import load_evaluator

            self.evaluator = load_evaluator(evaluator, self.device)
        self.metrics = json.loads(Path(metrics).read_text()) if metrics and Path(metrics).is_file() else None
        self.name = name or str(generator)

    def info(self) -> dict:
        headline = {k: round(v, 3) for k, v in (self.metrics or {}).items()
                    if isinstance(v, float) and (k.endswith("/fake") or k in ("fd_evaluator", "diversity/ratio"))}
        return {"model": self.name, "arch": arch_of(self.config), "text_model": self.config["text_model"],
                "image_size": self.G.cfg.image_size,
                "epochs": self.config.get("epochs"), "metrics": headline, "max_images": MAX_IMAGES,
                "max_caption": MAX_CAPTION, "scorer": self.evaluator is not None}

    @staticmethod
    def caption(text: str) -> tuple[str, int | None]:
        """The caption to use and, when it was cut, the character it was cut at."""
        check_captions([text], "t2i serve")
        text = one_line(text)
        if len(text) <= MAX_CAPTION:
            return text, None
        cut = text.rfind(" ", 0, MAX_CAPTION + 1)
        cut = cut if cut > 0 else MAX_CAPTION
        return text[:cut], cut

    def noise(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, self.G.cfg.z_dim, generator=torch.Generator().manual_seed(seed))  # (n, z_dim)

    @torch.no_grad()
    def draw(self, z: torch.Tensor, emb: torch.Tensor) -> list[dict]:
        """G(z, emb) as PNG data URLs, each with what the evaluator reads in it."""
        images = self.G(z.to(self.device), emb.to(self.device)).cpu()  # (n, 3, S, S)
        readings: list[dict] = [{} for _ in images]
        if self.evaluator is not None:
            logits = self.evaluator(images.to(self.device))["logits"]
            for attr, scores in logits.items():
                for i, k in enumerate(scores.argmax(1).tolist()):
                    readings[i][attr] = self.evaluator.attributes[attr][k]
        return [{"src": png_data_url(img), "reads": r} for img, r in zip(images, readings)]

    def generate(self, caption: str, n: int = 8, seed: int = 0) -> dict:
        if not 1 <= n <= MAX_IMAGES:
            raise T2IError(f"number of images must be 1 to {MAX_IMAGES}, got {n}")
        text, cut = self.caption(caption)
        emb = torch.from_numpy(self.encoder.encode([text]))  # (1, D)
        return {"caption": text, "cut_at": cut, "seed": seed,
                "images": self.draw(self.noise(n, seed), emb.expand(n, -1))}

    def interpolate(self, first: str, second: str, seed: int = 0) -> dict:
        """An interpolation strip: one noise vector, the caption embedding moving from ``first`` to ``second``."""
        (a, cut_a), (b, cut_b) = self.caption(first), self.caption(second)
        e = torch.from_numpy(self.encoder.encode([a, b]))  # (2, D)
        z, emb = gan_int_strip(e[0], e[1], self.noise(1, seed))  # the same noise at every step
        return {"captions": [a, b], "cut_at": [cut_a, cut_b], "seed": seed, "images": self.draw(z, emb)}


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    caption: str
    n: int = 8
    seed: int = 0


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    first: str
    second: str
    seed: int = 0


def create_app(demo: Demo):
    """The FastAPI app: the page at ``/`` and its JSON API under ``/api``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse

    app = FastAPI(title="t2i", docs_url=None, redoc_url=None)

    @app.exception_handler(T2IError)
    async def bad_input(request: Request, e: T2IError):
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"] if x != "body")
        return JSONResponse({"error": f"{where}: {first['msg']}" if where else first["msg"]}, status_code=400)

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    def info():
        return demo.info()

    @app.post("/api/generate")
    def generate(r: GenerateRequest):
        return demo.generate(r.caption, r.n, r.seed)

    @app.post("/api/interpolate")
    def interpolate(r: InterpolateRequest):
        return demo.interpolate(r.first, r.second, r.seed)

    return app
