"""Models: backbones, channel-class attention (Eq. 7–14), label GCN (Eq. 21–25), TRCGL-Net,
baselines and losses."""
