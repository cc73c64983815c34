"""Hugging Face Space entry point: the actprm step-scoring demo (see README.md).

Models come from ``$ACTPRM_SPACE_MODELS`` (comma-separated folders or Hub ids), else the embedded
offline default; ``python spaces/app.py`` serves it on http://127.0.0.1:7860.
"""

from actprm.space import build_demo

demo = build_demo()

if __name__ == "__main__":
    demo.launch()
