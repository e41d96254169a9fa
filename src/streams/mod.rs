//! Stream edges at run time. Pipes and socketpairs need no engine code once
//! created (the kernel moves the data); queues go through [`broker`].

pub mod broker;
