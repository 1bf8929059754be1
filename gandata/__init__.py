"""gandata: build clean GAN training sets of cartoon faces (fetch, crop, dedupe, shard) and train on them."""

__version__ = "0.1.0"
HOMEPAGE = "https://github.com/gandata/gandata"
USER_AGENT = f"gandata/{__version__} (+{HOMEPAGE})"  # every request the tool makes says who it is
