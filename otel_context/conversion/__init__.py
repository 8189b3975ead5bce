"""Stage 3, convert: an assembled root and its descendants' contributions -> one `ConversationThread`. Pure: no I/O."""
