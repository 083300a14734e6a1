//! Which msdb / master objects a batch touches, for permissions (229) and the history lock.
//!
//! A textual scan of three-part names outside string literals and comments. An object whose
//! name the batch also passes to `HAS_PERMS_BY_NAME` counts as guarded: the batch reads it
//! only when permitted (`IF HAS_PERMS_BY_NAME(N'msdb.dbo.syssessions', …) = 1 …`).

use std::time::Duration;

/// The batch's text with string literals and `--` comments blanked out (same length).
pub fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                out.push(' ');
                // '' inside a literal is an escaped quote.
                while let Some(d) = chars.next() {
                    if d == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                            out.push_str("  ");
                            continue;
                        }
                        out.push(' ');
                        break;
                    }
                    out.push(if d == '\n' { '\n' } else { ' ' });
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(' ');
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Three-part `msdb.*.*` / `master.*.*` names in code (lower case, deduplicated, in order).
pub fn referenced(text: &str) -> Vec<String> {
    let code = code_only(text).to_lowercase();
    let mut out: Vec<String> = Vec::new();
    for db in ["msdb.", "master."] {
        let mut from = 0;
        while let Some(i) = code[from..].find(db).map(|i| i + from) {
            from = i + db.len();
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '@') {
                continue;
            }
            let len = code[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(code.len() - i);
            let name = &code[i..i + len];
            if name.split('.').count() == 3 && !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// Objects the batch passes to `HAS_PERMS_BY_NAME` (it reads them only when permitted).
pub fn guarded(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    for part in lower.split("has_perms_by_name(").skip(1) {
        let part = part.trim_start();
        let quoted = part.strip_prefix("n'").or(part.strip_prefix('\''));
        if let Some(end) = quoted.and_then(|q| q.find('\'').map(|e| &q[..e])) {
            out.push(end.to_string());
        }
    }
    out
}

/// The object a batch may not touch, if any (guarded ones and the caught
/// `xp_sqlagent_enum_jobs` excepted).
pub fn first_denied(text: &str, may_use: impl Fn(&str) -> bool) -> Option<String> {
    let guarded = guarded(text);
    referenced(text)
        .into_iter()
        .find(|o| !guarded.contains(o) && !o.ends_with(".xp_sqlagent_enum_jobs") && !may_use(o))
}

/// 229 as SQL Server words it.
pub fn permission_denied(object: &str) -> crate::tds::tokens::ServerMessage {
    let parts: Vec<&str> = object.split('.').collect();
    let (db, schema, name) = (parts[0], parts[1], parts[2]);
    let perm = if name.starts_with("sp_") || name.starts_with("xp_") {
        "EXECUTE"
    } else {
        "SELECT"
    };
    crate::tds::tokens::ServerMessage::new(
        229,
        14,
        format!(
            "The {perm} permission was denied on the object '{name}', database '{db}', schema '{schema}'."
        ),
    )
}

/// `Some(timeout)` if the batch reads `sysjobhistory`: the `SET LOCK_TIMEOUT` in force at
/// its first read (`None` inside: wait indefinitely, also for -1 or no setting).
pub fn history_read(text: &str) -> Option<Option<Duration>> {
    let code = code_only(text).to_lowercase();
    let at = code.find("msdb.dbo.sysjobhistory")?;
    let before = &code[..at];
    let Some(i) = before.rfind("set lock_timeout") else {
        return Some(None);
    };
    let n: String = before[i + "set lock_timeout".len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    match n.parse::<i64>() {
        Ok(ms) if ms >= 0 => Some(Some(Duration::from_millis(ms as u64))),
        _ => Some(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_objects_outside_literals_and_guards() {
        let t = "-- agentfleet:x msdb.dbo.nothere\nIF HAS_PERMS_BY_NAME(N'msdb.dbo.syssessions', N'OBJECT', N'SELECT') = 1\n SET @s = (SELECT MAX(session_id) FROM msdb.dbo.syssessions);\nSELECT 'msdb.dbo.fake' FROM msdb.dbo.sysjobs AS j JOIN msdb.dbo.sysjobhistory h ON 1=1;";
        assert_eq!(
            referenced(t),
            [
                "msdb.dbo.syssessions",
                "msdb.dbo.sysjobs",
                "msdb.dbo.sysjobhistory"
            ]
        );
        assert_eq!(guarded(t), ["msdb.dbo.syssessions"]);
        assert_eq!(
            first_denied(t, |o| o != "msdb.dbo.sysjobs"
                && o != "msdb.dbo.syssessions"),
            Some("msdb.dbo.sysjobs".to_string())
        );
        assert_eq!(history_read(t), Some(None));
        let t = "SET LOCK_TIMEOUT 3000; SELECT 1 FROM msdb.dbo.sysjobhistory; SET LOCK_TIMEOUT -1;";
        assert_eq!(history_read(t), Some(Some(Duration::from_secs(3))));
        assert_eq!(history_read("SELECT 1"), None);
    }
}
