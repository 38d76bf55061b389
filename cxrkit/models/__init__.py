"""Model builders: vision encoders (timm), decoders, text towers."""
