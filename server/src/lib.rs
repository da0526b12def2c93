//! Gatehouse gateway: configuration, data directory bootstrap, and (in later issues) the
//! listeners, TUN device and session table that drive the sans-IO engine.
