"""vitcap: vision transformers and image captioning."""
