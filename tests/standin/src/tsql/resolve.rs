//! Name resolution of one parsed statement against the schema fixture.
//!
//! Scope is the statement (subqueries included; an `IF` with its branches counts as one):
//! a qualified column (`alias.col`) is checked against the table its alias names; a bare
//! column against every msdb / master / `sys` table of the statement, and only when the
//! statement reads no table variable, derived table or table function (their columns are
//! not known here).

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, ObjectName, Query, SelectItem, SetExpr, Statement, TableFactor, Visit,
    Visitor,
};

use super::schema::Schema;
use super::{Report, invalid_column, not_a_parameter};
use crate::tds::tokens::ServerMessage;

/// `DATEPART`-style arguments the grammar reads as identifiers.
const DATE_PARTS: &[&str] = &[
    "year",
    "yy",
    "yyyy",
    "quarter",
    "qq",
    "q",
    "month",
    "mm",
    "m",
    "dayofyear",
    "dy",
    "y",
    "day",
    "dd",
    "d",
    "week",
    "wk",
    "ww",
    "weekday",
    "dw",
    "hour",
    "hh",
    "minute",
    "mi",
    "n",
    "second",
    "ss",
    "s",
    "millisecond",
    "ms",
    "microsecond",
    "mcs",
    "nanosecond",
    "ns",
    "tzoffset",
    "tz",
    "iso_week",
    "isowk",
    "isoww",
];

#[derive(Default)]
struct Scope {
    /// (alias, object name, known to the fixture)
    relations: Vec<(Option<String>, String, bool)>,
    opaque: bool,
    aliases: Vec<String>,
    qualified: Vec<(String, String)>,
    bare: Vec<String>,
}

struct Resolver<'a> {
    schema: &'a Schema,
    stack: Vec<Scope>,
    report: &'a mut Report,
}

fn object_name(n: &ObjectName) -> String {
    Schema::normalize(n.to_string().replace(['[', ']'], "").to_lowercase())
}

fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn invalid_object(name: &str) -> ServerMessage {
    ServerMessage::new(208, 16, format!("Invalid object name '{name}'."))
}

pub fn statement(schema: &Schema, s: &Statement, report: &mut Report) -> Result<(), ServerMessage> {
    let mut r = Resolver {
        schema,
        stack: Vec::new(),
        report,
    };
    match s.visit(&mut r) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

impl Resolver<'_> {
    fn top(&mut self) -> &mut Scope {
        if self.stack.is_empty() {
            self.stack.push(Scope::default());
        }
        self.stack.last_mut().expect("a scope")
    }

    fn execute(&mut self, name: &ObjectName, parameters: &[Expr]) -> Result<(), ServerMessage> {
        let proc_name = object_name(name);
        if !Schema::covers(&proc_name) {
            return Ok(());
        }
        let Some(p) = self.schema.procedures.get(&proc_name) else {
            return Err(ServerMessage::new(
                2812,
                16,
                format!("Could not find stored procedure '{proc_name}'."),
            ));
        };
        let mut positional = 0;
        for e in parameters {
            match e {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    ..
                } if matches!(left.as_ref(), Expr::Identifier(i) if i.value.starts_with('@')) => {
                    let Expr::Identifier(i) = left.as_ref() else {
                        unreachable!("matched above")
                    };
                    if !p.parameters.contains_key(&i.value.to_lowercase()) {
                        return Err(not_a_parameter(&i.value, short(&proc_name)));
                    }
                    self.report
                        .parameters
                        .push((proc_name.clone(), i.value.to_lowercase()));
                }
                _ => positional += 1,
            }
        }
        if positional > p.positional.max(p.parameters.len()) {
            return Err(ServerMessage::new(
                8144,
                16,
                format!(
                    "Procedure or function {} has too many arguments specified.",
                    short(&proc_name)
                ),
            ));
        }
        Ok(())
    }

    fn resolve(&mut self, scope: Scope) -> Result<(), ServerMessage> {
        let columns_of = |name: &str| self.schema.tables.get(name).map(|t| &t.columns);
        for (q, col) in &scope.qualified {
            let rel = scope.relations.iter().find(|(alias, name, _)| match alias {
                Some(a) => a == q,
                None => short(name) == q,
            });
            if let Some((_, name, true)) = rel {
                let known = columns_of(name).is_some_and(|c| c.contains_key(&col.to_lowercase()));
                if !known {
                    return Err(invalid_column(col));
                }
                self.report.columns.push((name.clone(), col.to_lowercase()));
            }
        }
        let known: Vec<&String> = scope
            .relations
            .iter()
            .filter(|(_, _, k)| *k)
            .map(|(_, n, _)| n)
            .collect();
        if scope.opaque || known.is_empty() || known.len() != scope.relations.len() {
            return Ok(());
        }
        for col in &scope.bare {
            let l = col.to_lowercase();
            if l.starts_with('@') || DATE_PARTS.contains(&l.as_str()) || scope.aliases.contains(&l)
            {
                continue;
            }
            match known
                .iter()
                .find(|n| columns_of(n).is_some_and(|c| c.contains_key(&l)))
            {
                Some(n) => self.report.columns.push(((*n).clone(), l)),
                None => return Err(invalid_column(col)),
            }
        }
        Ok(())
    }
}

impl Visitor for Resolver<'_> {
    type Break = ServerMessage;

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<ServerMessage> {
        self.stack.push(Scope::default());
        if let Statement::Execute {
            name: Some(name),
            parameters,
            ..
        } = s
            && let Err(e) = self.execute(name, parameters)
        {
            return ControlFlow::Break(e);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _s: &Statement) -> ControlFlow<ServerMessage> {
        let scope = self.stack.pop().unwrap_or_default();
        match self.resolve(scope) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<ServerMessage> {
        if let SetExpr::Select(select) = q.body.as_ref() {
            let aliases: Vec<String> = select
                .projection
                .iter()
                .filter_map(|item| match item {
                    SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_lowercase()),
                    _ => None,
                })
                .collect();
            self.top().aliases.extend(aliases);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<ServerMessage> {
        match t {
            TableFactor::Table { name, alias, .. } => {
                let n = object_name(name);
                let known = self.schema.tables.contains_key(&n);
                if Schema::covers(&n) && !known && !n.starts_with("sys.") {
                    return ControlFlow::Break(invalid_object(&n));
                }
                let alias = alias.as_ref().map(|a| a.name.value.to_lowercase());
                self.top().relations.push((alias, n, known));
            }
            _ => self.top().opaque = true,
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<ServerMessage> {
        match e {
            Expr::Identifier(i) => self.top().bare.push(i.value.clone()),
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                let q = parts[0].value.to_lowercase();
                let c = parts[1].value.clone();
                self.top().qualified.push((q, c));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
