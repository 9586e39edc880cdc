//! The Ferry operator's library: the custom resource types (`crd`), the conditions
//! they report (`conditions`) and the generator of the checked-in `crds/` directory
//! (`crdgen`). Reconcilers come in a later slice and build on these types.

pub mod conditions;
pub mod crd;
pub mod crdgen;
