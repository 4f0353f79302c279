//! The scheduler of `diskferry serve`: runs each job at the ticks of its schedule (work in
//! progress).
