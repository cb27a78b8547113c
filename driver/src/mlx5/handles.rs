//! Typed handles of the objects the firmware creates: the numbers the `create_*_out` /
//! `alloc_*_out` outputs of Linux `include/linux/mlx5/mlx5_ifc.h` return (24 bits, 8 for an
//! EQ), one type each so that an SQ number cannot be passed where a CQ number is expected.

use std::fmt;

macro_rules! handle {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub u32);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} {:#x}", stringify!($name), self.0)
            }
        }
    };
}

handle!(
    /// A UAR page index (`alloc_uar_out.uar`).
    Uar
);
handle!(
    /// A protection domain (`alloc_pd_out.pd`).
    Pd
);
handle!(
    /// A transport domain (`alloc_transport_domain_out.transport_domain`).
    Td
);
handle!(
    /// An event queue number (`create_eq_out.eq_number`, 8 bits).
    Eqn
);
handle!(
    /// A completion queue number (`create_cq_out.cqn`).
    Cqn
);
handle!(
    /// A transport interface send number (`create_tis_out.tisn`).
    Tisn
);
handle!(
    /// A send queue number (`create_sq_out.sqn`).
    Sqn
);
handle!(
    /// A receive queue number (`create_rq_out.rqn`).
    Rqn
);
handle!(
    /// A transport interface receive number (`create_tir_out.tirn`).
    Tirn
);
handle!(
    /// A flow table id (`create_flow_table_out.table_id`).
    FtId
);
handle!(
    /// A flow group id (`create_flow_group_out.group_id`).
    FgId
);
