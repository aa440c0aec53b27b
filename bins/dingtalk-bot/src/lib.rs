//! DingTalk bot that answers short requests at once and pushes long results later.
