//! The storage suite against Postgres, each test on its own fresh database.

use std::sync::Arc;

use payment_service::{store::Store, testing};

async fn fresh() -> Arc<dyn Store> {
    Arc::new(
        testing::fresh_pg_store()
            .await
            .expect("fresh Postgres database"),
    )
}

payment_service::store_suite!(fresh());
