"""Networks. Each module holds one family; `backbones.py` builds pretrained trunks by name."""
