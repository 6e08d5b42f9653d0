pub mod standin;
pub mod softhsm;
