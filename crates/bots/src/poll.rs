//! The example bot: polls.
//!
//! - `/poll Lunch? | pizza | sushi` opens a poll in the space (the previous one closes);
//! - `/vote 2` votes (one vote per person; voting again changes it);
//! - `/results` shows the tally; `/help` says this.
//!
//! Answers go in the command's thread. State lives in memory: a restarted bot
//! forgets its polls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Bot, Ctx};

/// Most options in a poll.
pub const MAX_OPTIONS: usize = 10;

#[derive(Debug, Clone, Default)]
struct Poll {
    question: String,
    options: Vec<String>,
    /// Voter -> option index.
    votes: HashMap<String, usize>,
}

impl Poll {
    fn tally(&self) -> String {
        let mut counts = vec![0usize; self.options.len()];
        for &v in self.votes.values() {
            counts[v] += 1;
        }
        let parts: Vec<String> = self.options.iter().zip(&counts).map(|(o, n)| format!("{o} {n}")).collect();
        format!("{}: {}", self.question, parts.join(", "))
    }
}

/// The poll bot's commands on `bot`.
pub fn poll_bot(bot: Bot) -> Bot {
    let polls: Arc<Mutex<HashMap<String, Poll>>> = Arc::default();
    let (p1, p2, p3) = (polls.clone(), polls.clone(), polls);
    bot.command("poll", move |ctx: Ctx| {
        let polls = p1.clone();
        async move {
            let parts: Vec<String> =
                ctx.args.split('|').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            let answer = match parts.as_slice() {
                [q, opts @ ..] if opts.len() >= 2 && opts.len() <= MAX_OPTIONS => {
                    let poll = Poll { question: q.clone(), options: opts.to_vec(), votes: HashMap::new() };
                    let lines: Vec<String> =
                        poll.options.iter().enumerate().map(|(i, o)| format!("{}) {o}", i + 1)).collect();
                    let text = format!("Poll: {q}\n{}\nvote with /vote <number>", lines.join("\n"));
                    polls.lock().expect("not poisoned").insert(ctx.space().to_string(), poll);
                    text
                }
                _ => format!("usage: /poll question | option | option (2 to {MAX_OPTIONS} options)"),
            };
            ctx.reply(&answer).await?;
            Ok(())
        }
    })
    .command("vote", move |ctx: Ctx| {
        let polls = p2.clone();
        async move {
            let answer = {
                let mut polls = polls.lock().expect("not poisoned");
                match (polls.get_mut(ctx.space().as_str()), ctx.args.parse::<usize>()) {
                    (None, _) => "there is no poll here: start one with /poll".to_string(),
                    (Some(p), Ok(n)) if n >= 1 && n <= p.options.len() => {
                        p.votes.insert(ctx.sender().to_string(), n - 1);
                        format!("vote counted: {}", p.options[n - 1])
                    }
                    (Some(p), _) => format!("vote with a number from 1 to {}", p.options.len()),
                }
            };
            ctx.reply(&answer).await?;
            Ok(())
        }
    })
    .command("results", move |ctx: Ctx| {
        let polls = p3.clone();
        async move {
            let answer = match polls.lock().expect("not poisoned").get(ctx.space().as_str()) {
                Some(p) => p.tally(),
                None => "there is no poll here: start one with /poll".to_string(),
            };
            ctx.reply(&answer).await?;
            Ok(())
        }
    })
    .command("help", |ctx: Ctx| async move {
        ctx.reply("/poll question | option | option, /vote <number>, /results").await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_one_vote_per_person() {
        let mut p =
            Poll { question: "Lunch?".into(), options: vec!["pizza".into(), "sushi".into()], ..Poll::default() };
        p.votes.insert("a".into(), 0);
        p.votes.insert("b".into(), 1);
        p.votes.insert("a".into(), 1);
        assert_eq!(p.tally(), "Lunch?: pizza 0, sushi 2");
    }
}
