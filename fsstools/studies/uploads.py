"""Upload your own supports, masks and queries in a live notebook and segment them.

Three ipywidgets ``FileUpload`` boxes (support images, their masks in the same order by
file name, queries) and a button; the result is shown as :func:`fsstools.plots.segment_panel`
and kept in :attr:`UploadPanel.results`.
"""

from __future__ import annotations

import io

import ipywidgets as W
from IPython.display import display
from PIL import Image

from fsstools.errors import UserError
from fsstools.own_images.segmentation import Backbone, QueryResult, segment
from fsstools.plots import segment_panel
from fsstools.studies.widgets import show

ACCEPT = ".jpg,.jpeg,.png,.bmp,.tif,.tiff,.webp"


def uploaded_images(upload: W.FileUpload) -> list[tuple[str, Image.Image]]:
    """(file name, PIL image) of every file of ``upload``, sorted by name."""
    files = sorted(upload.value, key=lambda f: f["name"])
    return [(f["name"], Image.open(io.BytesIO(bytes(f["content"])))) for f in files]


class UploadPanel:
    """Upload boxes and a "segment" button over one loaded backbone.

    Args:
        backbone: from :func:`fsstools.own_images.segmentation.load_backbone`.
        method, size, device, class_id, keep_base: as for :func:`fsstools.segment`.

    Attributes:
        widget: the box to display.
        results: the last segmentation (empty before the first).
    """

    def __init__(self, backbone: Backbone, method: str | None = None, size: int | None = None,
                 device: str = "cpu", class_id: int | None = None, keep_base: bool = False
                 ) -> None:
        self.backbone, self.method, self.size = backbone, method, size
        self.device, self.class_id, self.keep_base = device, class_id, keep_base
        self.images = W.FileUpload(accept=ACCEPT, multiple=True, description="supports")
        self.masks = W.FileUpload(accept=".png", multiple=True, description="masks")
        self.queries = W.FileUpload(accept=ACCEPT, multiple=True, description="queries")
        self.button = W.Button(description="segment", button_style="primary")
        self.output = W.Output()
        self.results: list[QueryResult] = []
        self.button.on_click(lambda _: self.run())
        self.widget = W.VBox([W.HBox([self.images, self.masks, self.queries, self.button]),
                              self.output])

    def run(self) -> None:
        """Segment what is uploaded and show it (a mistake is shown as one line)."""
        self.output.clear_output()
        with self.output:
            images, masks = uploaded_images(self.images), uploaded_images(self.masks)
            queries = uploaded_images(self.queries)
            if not images or len(images) != len(masks) or not queries:
                print(f"upload support images and as many masks (got {len(images)} and "
                      f"{len(masks)}) and at least one query")
                return
            try:
                self.results = segment([(i, m) for (_, i), (_, m) in zip(images, masks,
                                                                          strict=True)],
                                       [q for _, q in queries], self.backbone, self.method,
                                       self.size, self.device, self.class_id,
                                       keep_base=self.keep_base)
            except UserError as err:
                print(f"error: {err}")
                return
            for r, (name, _) in zip(self.results, queries, strict=True):
                r.name = name
            show(segment_panel(self.results))

    def _ipython_display_(self) -> None:
        display(self.widget)
