//! Channel notifications seen by the ingress: replay detection (a notify id seen before is
//! acknowledged and changes nothing) and a record of notifications for unknown orders.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeRecord {
    pub channel: String,
    pub notify_id: String,
    pub out_trade_no: String,
    pub trade_status: String,
    pub total_amount: Option<String>,
    /// The payment workflow signalled, or `None` for an unknown order.
    pub workflow_id: Option<String>,
}

impl Store {
    /// Whether this channel notification was already delivered to its workflow (or recorded as
    /// unmatched).
    pub async fn notice_seen(&self, channel: &str, notify_id: &str) -> Result<bool, StoreError> {
        let q =
            self.sql("SELECT 1 AS one FROM channel_notices WHERE channel = ? AND notify_id = ?");
        Ok(sqlx::query(&q)
            .bind(channel)
            .bind(notify_id)
            .fetch_optional(self.pool())
            .await?
            .is_some())
    }

    /// Records a handled notification; recording the same one twice is a no-op.
    pub async fn record_notice(&self, n: &NoticeRecord) -> Result<(), StoreError> {
        let q = self.sql(
            "INSERT INTO channel_notices (channel, notify_id, out_trade_no, trade_status, \
             total_amount, workflow_id, matched, received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (channel, notify_id) DO NOTHING",
        );
        sqlx::query(&q)
            .bind(&n.channel)
            .bind(&n.notify_id)
            .bind(&n.out_trade_no)
            .bind(&n.trade_status)
            .bind(n.total_amount.clone())
            .bind(n.workflow_id.clone())
            .bind(i64::from(n.workflow_id.is_some()))
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Notifications for orders we do not know, newest first (for operators).
    pub async fn unmatched_notices(&self) -> Result<Vec<NoticeRecord>, StoreError> {
        let q = "SELECT channel, notify_id, out_trade_no, trade_status, total_amount, workflow_id \
                 FROM channel_notices WHERE matched = 0 ORDER BY received_at_ms DESC";
        let rows = sqlx::query(q).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(NoticeRecord {
                    channel: r.try_get("channel")?,
                    notify_id: r.try_get("notify_id")?,
                    out_trade_no: r.try_get("out_trade_no")?,
                    trade_status: r.try_get("trade_status")?,
                    total_amount: r.try_get("total_amount")?,
                    workflow_id: r.try_get("workflow_id")?,
                })
            })
            .collect()
    }
}
