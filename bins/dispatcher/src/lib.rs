//! HTTP service that packs negative evidence into task packages and delivers them by signed webhook.
