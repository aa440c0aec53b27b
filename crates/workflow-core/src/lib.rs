//! The durable priority engine shared by the dispatcher and the DingTalk bot.
