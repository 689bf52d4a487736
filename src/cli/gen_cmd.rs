//! `onionbalance completions` and `onionbalance man`: shell completions and manual pages,
//! generated from the same clap definitions that parse the command line, so they never
//! drift from it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap_complete::Shell;

/// Options of `onionbalance completions`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: Shell,
    /// Write the completion files of both `onionbalance` and `onionbalance-config` into
    /// this directory (named as the shell looks them up) instead of printing
    /// `onionbalance`'s.
    #[arg(long, value_name = "DIR")]
    pub(crate) output: Option<PathBuf>,
}

/// Options of `onionbalance man` (for packagers; hidden from `--help`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ManArgs {
    /// Directory to write the pages into: onionbalance.1, one page per subcommand
    /// (onionbalance-run.1, ...), and onionbalance-config.1 for the wizard's own binary.
    #[arg(long, value_name = "DIR")]
    pub(crate) output: PathBuf,
}

/// The commands to document: `onionbalance` and `onionbalance-config`.
pub(crate) struct Commands {
    /// `onionbalance`'s command tree.
    pub(crate) onionbalance: clap::Command,
    /// The `onionbalance-config` binary's command.
    pub(crate) onionbalance_config: clap::Command,
}

/// Prints or writes shell completions.
pub(crate) fn completions(args: &CompletionsArgs, cmds: Commands) -> Result<bool> {
    let Commands {
        mut onionbalance,
        mut onionbalance_config,
    } = cmds;
    match &args.output {
        None => {
            clap_complete::generate(
                args.shell,
                &mut onionbalance,
                "onionbalance",
                &mut std::io::stdout(),
            );
        }
        Some(dir) => {
            create_dir(dir)?;
            for (cmd, name) in [
                (&mut onionbalance, "onionbalance"),
                (&mut onionbalance_config, "onionbalance-config"),
            ] {
                let path = clap_complete::generate_to(args.shell, cmd, name, dir)
                    .with_context(|| format!("cannot write completions into {}", dir.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(true)
}

/// The config file's manual page, onionbalance.yaml(5): written by hand, kept in the
/// repository, and written out with the generated pages so that packages install it.
pub(crate) const CONFIG_PAGE: &str = include_str!("../../man/onionbalance.yaml.5");

/// The file name of [`CONFIG_PAGE`].
pub(crate) const CONFIG_PAGE_NAME: &str = "onionbalance.yaml.5";

/// The FILES section of onionbalance(1) and onionbalance-run(1), in roff.
const FILES: &str = r#".SH FILES
.TP
.I ./config.yaml
The config file of every command when neither \fB\-c\fR nor \fBONIONBALANCE_CONFIG\fR is
given and this file exists (as upstream Onionbalance); its format is in
\fBonionbalance.yaml\fR(5).
.TP
.I /etc/onionbalance/config.yaml
The config file of the packaged systemd unit, which passes it with \fB\-c\fR, and of every
command when there is no \fI./config.yaml\fR either.
.TP
.I /etc/onionbalance/*.key
The frontend keys named by the config's \fBkey:\fR entries (PKCS#8 PEM or a C tor
\fIhs_ed25519_secret_key\fR; relative paths are resolved against the config file's
directory). They are the only secrets: keep them mode 0600, readable by the daemon's user,
and backed up.
.TP
.I /etc/onionbalance/authorized_clients/
Where a service's \fBauthorized\-clients\-dir:\fR usually points: one \fIname\fR.auth file
(a client's public key) per client allowed to discover the frontend.
.TP
.I /var/lib/onionbalance
The data directory under systemd (\fB$STATE_DIRECTORY\fR; \fB\-\-data\-dir\fR elsewhere,
default \fI$XDG_DATA_HOME/onionbalance\fR, else \fI~/.local/share/onionbalance\fR). It holds
\fIpublish/revisions/\fR, the last revision counter published per frontend and time period
(kept so that a restart never publishes a lower one), and, when no \fB\-\-arti\-config\fR
is given, Arti's \fIstate/\fR (guards) and \fIcache/\fR (directory documents).
.TP
.I /run/onionbalance/status.sock
The status socket of the packaged unit when the config names none
(\fB$RUNTIME_DIRECTORY\fR/status.sock); \fBonionbalance status\fR reads it when neither
\fB\-\-socket\fR, \fBONIONBALANCE_STATUS_SOCKET_LOCATION\fR nor the config names another.
"#;

/// Writes the manual pages: onionbalance(1), a page per subcommand, onionbalance-config(1)
/// for the wizard's own binary, and onionbalance.yaml(5).
pub(crate) fn man(args: &ManArgs, cmds: Commands) -> Result<bool> {
    let dir = &args.output;
    create_dir(dir)?;
    let err = || format!("cannot write manual pages into {}", dir.display());
    let mut root = cmds.onionbalance.disable_help_subcommand(true);
    root.build();
    let subcommands = page_names(&root);
    let mut pages = Vec::new();
    write_pages(&root, &subcommands, dir, &mut pages).with_context(err)?;
    // The wizard's page is the page of the binary of that name (the same wizard, under the
    // name upstream's users look up), not that of the `config` subcommand.
    let wizard = cmds.onionbalance_config;
    let wizard_name = clap_mangen::Man::new(wizard.clone()).get_filename();
    let see_also = see_also(&[
        "onionbalance(1)",
        "onionbalance-backend(1)",
        "onionbalance.yaml(5)",
    ]);
    let text = render(&wizard, &[exit_status_section(), see_also]).with_context(err)?;
    std::fs::write(dir.join(&wizard_name), text).with_context(err)?;
    pages.push(wizard_name);
    std::fs::write(dir.join(CONFIG_PAGE_NAME), CONFIG_PAGE).with_context(err)?;
    pages.push(CONFIG_PAGE_NAME.to_owned());
    pages.sort();
    println!("wrote {} into {}", pages.join(", "), dir.display());
    Ok(true)
}

/// The pages of `root`'s visible subcommands, e.g. `onionbalance-run(1)`, in order (the
/// `config` subcommand's page is the wizard binary's, `onionbalance-config(1)`).
fn page_names(root: &clap::Command) -> Vec<String> {
    root.get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| format!("{}(1)", c.get_display_name().unwrap_or(c.get_name())))
        .collect()
}

/// Writes the page of `cmd` and of each visible subcommand below it (whose names go into
/// `written`); `subcommands` names the top level's subcommand pages, for SEE ALSO.
fn write_pages(
    cmd: &clap::Command,
    subcommands: &[String],
    dir: &Path,
    written: &mut Vec<String>,
) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, subcommands, dir, written)?;
    }
    let name = clap_mangen::Man::new(cmd.clone()).get_filename();
    if name == "onionbalance-config.1" {
        // Written from the wizard's own binary instead (see `man`).
        return Ok(());
    }
    let top = cmd.get_display_name().unwrap_or(cmd.get_name()) == "onionbalance";
    let sections = if top {
        let mut others: Vec<&str> = subcommands.iter().map(String::as_str).collect();
        others.extend(["onionbalance.yaml(5)", "tor(1)", "systemd.service(5)"]);
        vec![
            environment_section(),
            FILES.to_owned(),
            exit_status_section(),
            see_also(&others),
        ]
    } else if name == "onionbalance-run.1" {
        vec![
            environment_section(),
            FILES.to_owned(),
            exit_status_section(),
            see_also(&["onionbalance(1)", "onionbalance.yaml(5)"]),
        ]
    } else {
        vec![
            exit_status_section(),
            see_also(&["onionbalance(1)", "onionbalance.yaml(5)"]),
        ]
    };
    std::fs::write(dir.join(&name), render(cmd, &sections)?)?;
    written.push(name);
    Ok(())
}

/// The page of `cmd`: clap_mangen's sections from its definition (without the text after
/// the options, which `--help` shows and `sections` replaces), then `sections` (roff, each
/// starting with its `.SH`), then the version.
fn render(cmd: &clap::Command, sections: &[String]) -> std::io::Result<Vec<u8>> {
    let mut cmd = cmd.clone();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    for section in sections {
        out.extend_from_slice(section.as_bytes());
    }
    if cmd.get_version().or(cmd.get_long_version()).is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}

/// The ENVIRONMENT section, from the table `--help` shows too.
fn environment_section() -> String {
    let mut roff = String::from(".SH ENVIRONMENT\n");
    for (var, what) in super::ENVIRONMENT {
        roff.push_str(&format!(".TP\n.B {}\n{}\n", escape(var), escape(what)));
    }
    roff
}

/// The EXIT STATUS section, from the table `--help` shows too.
fn exit_status_section() -> String {
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for (code, what) in super::exit::TABLE {
        roff.push_str(&format!(".TP\n.B {code}\n{}\n", escape(what)));
    }
    roff.push_str(
        ".PP\nThe packaged systemd unit does not restart the daemon after 64 or 78 \
         (\\fBRestartPreventExitStatus=\\fR): a restart would fail the same way.\n",
    );
    roff
}

/// A SEE ALSO section listing `pages`, each written `name(section)`.
fn see_also(pages: &[&str]) -> String {
    let refs: Vec<String> = pages
        .iter()
        .map(|p| match p.split_once('(') {
            Some((name, section)) => format!("\\fB{}\\fR({section}", escape(name)),
            None => format!("\\fB{}\\fR", escape(p)),
        })
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", refs.join(",\n"))
}

/// `text` as roff running text: backslashes and hyphens escaped, and a leading `.` or `'`
/// kept from being read as a request.
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Creates `dir` and its parents if missing.
fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}
