//! The standard task package: types, validation, JSON and task ids.
