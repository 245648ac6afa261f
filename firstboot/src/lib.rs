//! `ecs-firstboot`: the first-boot agent.
