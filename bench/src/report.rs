//! The results: each scenario returns a [`Section`] (a table plus its targets and
//! notes); this module prints them and renders `docs/BENCHMARKS.md` with the
//! machine, the versions, the date and the command beside every figure.

use crate::machine::Machine;

/// A target and whether this run met it.
#[derive(Debug, Clone)]
pub struct Target {
    pub what: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Section {
    pub title: String,
    /// What was measured and how, in a sentence or two.
    pub method: String,
    /// The command that reproduces exactly this table.
    pub command: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: &str, command: &str, header: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            command: command.to_owned(),
            header: header.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn target(&mut self, what: impl Into<String>, measured: impl Into<String>, met: bool) {
        self.targets.push(Target {
            what: what.into(),
            measured: measured.into(),
            met,
        });
    }

    fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("| {} |\n", self.header.join(" | ")));
        out.push_str(&format!(
            "|{}\n",
            self.header.iter().map(|_| "---|").collect::<String>()
        ));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }

    /// The section as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n", self.title);
        if !self.method.is_empty() {
            out.push_str(&format!("{}\n\n", self.method));
        }
        out.push_str(&format!("Command: `{}`\n\n", self.command));
        out.push_str(&self.table());
        if !self.targets.is_empty() {
            out.push_str("\n| target | measured | met |\n|---|---|---|\n");
            for t in &self.targets {
                out.push_str(&format!(
                    "| {} | {} | {} |\n",
                    t.what,
                    t.measured,
                    if t.met { "yes" } else { "**NOT MET**" }
                ));
            }
        }
        for n in &self.notes {
            out.push_str(&format!("\n- {n}"));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        out.push('\n');
        out
    }
}

/// The whole document.
pub fn document(machine: &Machine, command: &str, sections: &[Section], epilogue: &str) -> String {
    let mut out = String::from(
        "# Benchmarks\n\n\
         Written by the benchmark driver (`bench/`, crate `wxpay-bench`); do not edit by hand.\n\
         Everything compared in a table was measured side by side in the same run, on \
         loopback, so the ratios hold even where the absolute figures depend on the machine. \
         `all` runs the scenarios in the order create, notify, micro, delivery, streams (the \
         million-stream one seeds a million orders, late), console (a million orders in a database \
         of its own, last), each after a `CHECKPOINT`, so that each starts without the previous \
         one's dirty buffers.\n\n",
    );
    out.push_str(&format!("Command: `{command}`\n\n"));
    out.push_str(&machine.markdown());
    out.push('\n');
    for s in sections {
        out.push_str(&s.markdown());
    }
    out.push_str(epilogue);
    out
}
