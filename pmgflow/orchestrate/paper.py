"""The paper's numbers, as data: the targets `pmgflow report` puts beside ours (and, in the `sources` table, the
published numbers of the other collection-free recipes, each row naming its paper).

Provenance: *Data Collection-free Masked Video Modeling*, Ishikawa, Kondo, Aoki, ECCV 2024 (arXiv 2409.06665).
No official code is public; the numbers come from a public summary of the paper. Its baseline rows (scratch
51.4/18.0, VideoMAE 91.3/62.6, VideoMAE K400 96.1/73.3) match VideoMAE's own published results, so the
transcription looks faithful. Top-1 accuracy (%), full fine-tuning, ViT-B, 16x224x224, mask ratio 0.75,
2000 pre-training epochs. The effect of epochs, data scale, categories and limited fine-tuning data is shown
in figures whose numbers are not known: those sweeps have no paper table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROVENANCE = ("Ishikawa, Kondo, Aoki, Data Collection-free Masked Video Modeling, ECCV 2024 (arXiv 2409.06665), "
              "from a public summary; ViT-B, 16x224x224, mask 0.75, 2000 epochs, top-1 %.")


@dataclass(frozen=True)
class PaperTable:
    """One table of the paper: rows of top-1 per dataset; aliases map pmgflow's labels onto its rows."""

    title: str
    columns: tuple[str, ...]
    rows: dict[str, tuple[float | None, ...]]
    aliases: dict[str, str] = field(default_factory=dict)
    note: str = ""
    provenance: str = PROVENANCE

    def lookup(self, label: str) -> dict[str, float] | None:
        """The paper's numbers of the row a label names (its own row name or an alias, any case), or None."""
        key = label.strip().lower()
        names = {name.lower(): name for name in self.rows} | {a.lower(): r for a, r in self.aliases.items()}
        row = names.get(key)
        if row is None:
            return None
        return {c: v for c, v in zip(self.columns, self.rows[row]) if v is not None}


UCF_HMDB = ("UCF101", "HMDB51")

TABLES: dict[str, PaperTable] = {
    "single_transform": PaperTable(
        title="Single transform in PMG",
        columns=UCF_HMDB,
        rows={"Identity (static video)": (72.7, 35.6), "Sliding Window": (75.1, 40.5), "Zoom-in/out": (81.2, 44.5),
              "Fade-in/out": (76.3, 34.1), "Affine": (80.5, 43.2), "Perspective": (82.7, 45.9),
              "Color Jitter": (76.2, 38.7), "CutMix": (76.8, 45.1), "Zoom-in/out + Affine": (83.8, 51.8)},
        aliases={"identity": "Identity (static video)", "sliding_window": "Sliding Window", "zoom": "Zoom-in/out",
                 "fade": "Fade-in/out", "affine": "Affine", "perspective": "Perspective",
                 "color_jitter": "Color Jitter", "cutmix": "CutMix", "zoom+affine": "Zoom-in/out + Affine"},
        note="The combination row is the paper's best set (adding CutMix hurts).",
    ),
    "augmentation": PaperTable(
        title="Video-level augmentation on Zoom-in/out + Affine",
        columns=UCF_HMDB,
        rows={"none": (83.8, 51.8), "Mixup": (87.3, 55.9), "VideoMix": (85.2, 53.0)},
    ),
    "main": PaperTable(
        title="Main comparison",
        columns=("UCF101", "HMDB51", "Diving48"),
        rows={"Scratch": (51.4, 18.0, 17.9), "VideoMAE, downstream videos": (91.3, 62.6, 79.3),
              "VideoMAE, Kinetics-400 (260k)": (96.1, 73.3, None), "MoSI (ViT-B), real images": (48.0, 27.3, 14.2),
              "PPMA, real + synthetic videos (300k)": (92.5, 71.2, 64.0), "PMG, downstream frames": (87.3, 55.9, 68.3),
              "PMG, PASS (100k real images)": (89.3, 60.0, 69.2),
              "PMG, Shaders1k (100k synthetic images)": (89.4, 59.7, 72.3)},
        aliases={"scratch": "Scratch"},
    ),
    "image_sources": PaperTable(
        title="Image sources of PMG pre-training",
        columns=("UCF101", "HMDB51", "Diving48"),
        rows={"FractalDB": (78.1, 41.1, None), "Visual Atom": (82.6, 48.2, None), "Shaders1k": (89.4, 59.7, 72.3),
              "PASS (real images)": (89.3, 60.0, 69.2), "downstream frames": (87.3, 55.9, 68.3)},
        aliases={"fractal": "FractalDB", "photos": "PASS (real images)", "folder": "PASS (real images)",
                 "video_frames": "downstream frames", "shaders": "Shaders1k"},
        note="FractalDB and Visual Atom from the 100k synthetic-source table; the others from the main table "
             "(Shaders1k: 89.6 in the synthetic-source table).",
    ),
    "real_plus_pmg": PaperTable(
        title="PMG added to real-video pre-training",
        columns=UCF_HMDB,
        rows={"real videos only": (91.3, 62.6), "pseudo-motion only": (87.3, 55.9),
              "real + pseudo-motion": (92.2, 64.6)},
    ),
}

YU_PROVENANCE = (
    "Rows marked (Yu et al.): Yu, Chen, Gandelsman, Learning Video Representations without Natural Videos "
    "(arXiv 2410.24213), VideoMAE ViT-B pre-trained on their synthetic videos, fine-tuned top-1 %; HMDB51 only where "
    "reported. Rows marked (Ishikawa et al.): " + PROVENANCE + " MoSI's row is Ishikawa et al.'s ViT-B run of MoSI "
    "(Huang et al., CVPR 2021) on real images.")

TABLES["sources"] = PaperTable(
    title="Collection-free pre-training video sources",
    columns=UCF_HMDB,
    rows={"static images (Ishikawa et al.)": (72.7, 35.6),
          "PMG Zoom-in/out + Affine + Mixup, Shaders1k (Ishikawa et al.)": (89.4, 59.7),
          "MoSI, real images (Ishikawa et al.)": (48.0, 27.3),
          "static circles (Yu et al.)": (67.8, None),
          "moving circles (Yu et al.)": (85.2, None),
          "accelerating transforming textured shapes (Yu et al.)": (89.4, None),
          "StyleGAN texture crops (Yu et al.)": (90.2, 64.1),
          "real image crops (Yu et al.)": (91.3, 64.1)},
    aliases={"static": "static images (Ishikawa et al.)",
             "pmg": "PMG Zoom-in/out + Affine + Mixup, Shaders1k (Ishikawa et al.)",
             "mosi": "MoSI, real images (Ishikawa et al.)",
             "static_circles": "static circles (Yu et al.)", "moving_circles": "moving circles (Yu et al.)",
             "textured": "accelerating transforming textured shapes (Yu et al.)"},
    note="Yu et al.'s moving-shapes, transforming and accelerating rows (without textures) are not in this table. "
         "Their textured rows crop textures from a texture set or real images; pmgflow's CPU-scale textures are crops "
         "of the embedded fractals.",
    provenance=YU_PROVENANCE,
)

# Which paper column a fine-tuning dataset kind is compared with.
DATASET_COLUMNS = {"ucf101": "UCF101", "hmdb51": "HMDB51", "diving48": "Diving48"}
