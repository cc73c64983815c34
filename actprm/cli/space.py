"""``actprm space``: serve the step-scoring demo (the Gradio app of ``spaces/``) on this machine."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import TrlParser

HELP = "serve the step-scoring demo (Gradio) locally, offline on the embedded default model"


@dataclass
class SpaceArguments:
    """Options of ``actprm space``."""

    model: list[str] | None = field(
        default=None,
        metadata={"help": "Models to offer, the first by default: folders or Hub ids, or `embedded-default`; "
                  "None: $ACTPRM_SPACE_MODELS (comma-separated) or the embedded default."},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0: every interface)."})
    port: int = field(default=7860, metadata={"help": "Port to listen on."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Let models run their own code (Qwen2.5-Math-PRM-style PRMs); also "
                  "$ACTPRM_SPACE_TRUST_REMOTE_CODE=1."},
    )
    concurrency: int = field(default=2, metadata={"help": "Scoring requests run at once; more wait in the queue."})


def main(argv: list[str]) -> int:
    """Parse ``argv``, load the first model and serve until interrupted; returns 0."""
    (args,) = TrlParser(SpaceArguments, prog="actprm space", description=HELP).parse_args_and_config(argv)
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1, got {args.concurrency}")
    try:
        from ..space import build_demo
    except ModuleNotFoundError as error:
        if error.name not in ("gradio", "matplotlib"):
            raise
        raise ValueError(f'the Space needs {error.name}: pip install "actprm[space]"') from None

    demo = build_demo(args.model, trust_remote_code=args.trust_remote_code or None, concurrency_limit=args.concurrency)
    demo.launch(server_name=args.host, server_port=args.port)
    return 0
