//! Safe librados wrapper.
