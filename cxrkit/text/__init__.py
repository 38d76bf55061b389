"""Vision-language text processing: entities, negation, labels, prompts."""
