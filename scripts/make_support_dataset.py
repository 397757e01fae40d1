#!/usr/bin/env python3
"""Generate datasets/support/ (train.jsonl, eval.jsonl, heldout.jsonl) for Halden Hub, an invented
smart-home hub, so a fine-tune can be checked on facts no base model can know.

    python3 scripts/make_support_dataset.py

Deterministic (seeded RNG, no dependencies beyond the standard library). Each fact below has a
canonical house-style answer, training phrasings, optional eval phrasings, and held-out questions
in a different wording and persona with the short strings a correct answer must contain. The
script asserts that no held-out question appears in train, that every held-out fact is taught in a
training reply, and that every conversation stays under ~200 tokens.
"""
SYSTEM = (
    "You are Wren, the friendly support assistant for Halden Hub, "
    "a smart-home hub made by Tallowmere Systems."
)

FACTS = [
    # ---- company and products -------------------------------------------------------------
    dict(
        id="company",
        answer="Halden Hub is designed and supported by Tallowmere Systems, a smart-home company "
        "based in Boise, Idaho. I'm Wren, Tallowmere's support assistant.",
        train=[
            "Who makes the Halden Hub?",
            "What company is behind Halden?",
            "Which company manufactures Halden Hub?",
            "Who is the manufacturer of this hub?",
            "Where is the company that makes Halden based?",
            "Is Halden made by Tallowmere?",
        ],
        eval=["Which business produces the Halden smart hub?"],
        heldout=[
            ("My neighbour recommended this hub, but I've never heard of the brand. What firm is "
             "actually behind it and where are they located?", ["Tallowmere", "Boise"]),
        ],
    ),
    dict(
        id="hub_price",
        answer="The Halden Hub costs $129 and the compact Halden Hub Mini costs $69. Both work with "
        "the free Basic plan, so no subscription is required.",
        train=[
            "How much is the Halden Hub?",
            "What does the hub cost?",
            "What's the price of the Halden Hub Mini?",
            "How expensive is the Halden Hub?",
            "Price of the hub and the Mini?",
            "How much would I pay for a Halden Hub?",
        ],
        eval=["What's the retail price for the Halden hardware?"],
        heldout=[
            ("I'm shopping for a birthday present for my sister. What would the full-size hub "
             "set me back?", ["129"]),
            ("Money is tight for me. What's the cheapest piece of Halden hardware I can buy, and "
             "for how much?", ["Mini", "69"]),
        ],
    ),
    dict(
        id="mini_difference",
        answer="The Halden Hub Mini has no Z-Wave radio and no backup battery. Otherwise it supports "
        "the same Zigbee, Thread and Matter devices as the full Halden Hub.",
        train=[
            "What's the difference between the Hub and the Hub Mini?",
            "Does the Mini support Z-Wave?",
            "Is the Hub Mini missing anything?",
            "Hub or Hub Mini: which should I buy?",
            "Can the Halden Hub Mini run on battery?",
            "What features does the Mini lack?",
        ],
        eval=["How does the Mini compare with the regular hub?"],
        heldout=[
            ("Which radio and which power feature does the smaller model leave out compared with "
             "the standard one?", ["Z-Wave", "battery"]),
        ],
    ),
    # ---- plans and billing ------------------------------------------------------------------
    dict(
        id="plans_overview",
        answer="Halden has three plans: Basic is free, Plus is $7.49 per month, and Pro is $15.99 "
        "per month. Annual billing is cheaper on both paid plans.",
        train=[
            "What plans do you offer?",
            "What subscription tiers are there?",
            "Can you list the Halden plans?",
            "What are my subscription options?",
            "How many plans does Halden have?",
            "Which plans are available and what do they cost?",
        ],
        eval=["Give me a rundown of your subscription levels."],
        heldout=[
            ("I run a small rental business and need to budget. Could you list every subscription "
             "tier along with its monthly fee?", ["Basic", "7.49", "15.99"]),
        ],
    ),
    dict(
        id="plus_price",
        answer="Halden Plus costs $7.49 per month, or $74 per year if you pay annually. You can "
        "switch billing in the app under Settings > Subscription.",
        train=[
            "How much is Halden Plus?",
            "What's the price of the Plus plan?",
            "Is there an annual price for Plus?",
            "How much does Plus cost per year?",
            "Plus plan monthly cost?",
            "What will Halden Plus cost me?",
        ],
        eval=["What's the yearly rate for Plus?"],
        heldout=[
            ("If I commit to a full year of the middle subscription tier, how much is that?",
             ["74"]),
        ],
    ),
    dict(
        id="pro_price",
        answer="Halden Pro costs $15.99 per month, or $159 per year with annual billing. Pro "
        "includes everything in Plus, plus multi-home support and a priority support line.",
        train=[
            "How much is Halden Pro?",
            "What does the Pro plan cost?",
            "Pro plan price per year?",
            "What's the monthly fee for Pro?",
            "How much would Pro cost annually?",
            "Price of the top plan?",
        ],
        eval=["What do you charge for Pro?"],
        heldout=[
            ("My accountant wants the exact annual cost of your most expensive tier. What is it?",
             ["159"]),
            ("Paying month to month, what's the fee for the highest plan?", ["15.99"]),
        ],
    ),
    dict(
        id="basic_limits",
        answer="The free Basic plan supports up to 25 devices and keeps 48 hours of event history. "
        "It includes local automations and the Halden app at no cost.",
        train=[
            "What do I get on the free plan?",
            "How many devices can I connect on Basic?",
            "How long is history kept on the Basic plan?",
            "What are the limits of the Basic plan?",
            "Is there a device limit on the free tier?",
            "What does Halden Basic include?",
        ],
        eval=["How much event history does the free plan keep?"],
        heldout=[
            ("I'd rather not pay a subscription at all. How many gadgets can I pair before "
             "hitting the cap?", ["25"]),
            ("Without paying anything, how far back can I scroll through my event log?",
             ["48 hours"]),
        ],
    ),
    dict(
        id="plus_features",
        answer="Halden Plus supports up to 150 devices, keeps 30 days of event history, and lets "
        "up to 6 household members share the home. It also backs up your automations to the cloud.",
        train=[
            "What does Halden Plus include?",
            "How many devices does Plus support?",
            "How much history does Plus keep?",
            "How many people can share a home on Plus?",
            "What are the Plus plan features?",
            "Why should I upgrade to Plus?",
        ],
        eval=["What's included with a Plus subscription?"],
        heldout=[
            ("My family all want the app on their phones. On the middle tier, how many members "
             "can share one home?", ["6"]),
            ("On the mid-priced subscription, how long are my events stored?", ["30 days"]),
        ],
    ),
    dict(
        id="pro_features",
        answer="Halden Pro keeps 90 days of event history, covers up to 5 homes, and allows 12 "
        "household members. Pro members also get a priority support line.",
        train=[
            "What does Pro include?",
            "How many homes can I manage with Pro?",
            "How much history does Pro keep?",
            "What's the difference between Plus and Pro?",
            "How many members can share on Pro?",
            "Does Pro support multiple homes?",
        ],
        eval=["What extra do I get if I pay for Pro?"],
        heldout=[
            ("I manage several vacation cabins. What's the maximum number of properties one "
             "account on the top tier can cover?", ["5 homes"]),
            ("How long does the premium tier hold on to my event records?", ["90 days"]),
        ],
    ),
    dict(
        id="free_trial",
        answer="Halden Plus comes with a 21-day free trial, available once per account. If you "
        "cancel before the trial ends, you won't be charged.",
        train=[
            "Is there a free trial?",
            "Can I try Plus for free?",
            "How long is the free trial?",
            "Do you offer a trial of the paid plan?",
            "Will I be charged during the trial?",
            "Can I test Plus before paying?",
        ],
        eval=["How many days is the Plus trial?"],
        heldout=[
            ("Before I hand over any money, can I sample the paid features for a while? For how "
             "long?", ["21"]),
        ],
    ),
    dict(
        id="cancel",
        answer="You can cancel anytime in the Halden app under Settings > Subscription, with no "
        "cancellation fee. Your paid features stay active until the end of the billing period.",
        train=[
            "How do I cancel my subscription?",
            "Is there a cancellation fee?",
            "Can I cancel Plus anytime?",
            "Where do I cancel my plan?",
            "What happens when I cancel?",
            "How can I stop my Halden subscription?",
        ],
        eval=["I want to end my paid plan. How?"],
        heldout=[
            ("I'm moving abroad and want to stop paying. Which menu in the app do I go to?",
             ["Subscription"]),
        ],
    ),
    dict(
        id="sub_refund",
        answer="Annual plans can be refunded on a prorated basis if you ask within 14 days of the "
        "renewal date. Monthly plans aren't refunded, but you can cancel anytime to stop the next "
        "charge.",
        train=[
            "Can I get a refund on my subscription?",
            "I was charged for a yearly renewal I didn't want. Can I get my money back?",
            "Are monthly plans refundable?",
            "How long do I have to request an annual plan refund?",
            "What's your subscription refund policy?",
            "Do you refund annual renewals?",
        ],
        eval=["My annual plan just renewed by accident; is a refund possible?"],
        heldout=[
            ("The yearly auto-renewal hit my card last week and I forgot to cancel. What's the "
             "deadline for getting that money back?", ["14 days"]),
        ],
    ),
    # ---- returns and warranty ---------------------------------------------------------------
    dict(
        id="hw_return",
        answer="Hardware bought from haldenhome.com can be returned within 45 days of delivery for "
        "a full refund. We email you a free prepaid return label, so returns cost you nothing.",
        train=[
            "What's your return policy?",
            "How long do I have to return the hub?",
            "Can I return my Halden Hub?",
            "Is return shipping free?",
            "How many days is the return window?",
            "I don't like the hub. Can I send it back?",
        ],
        eval=["What's the deadline for sending back hardware?"],
        heldout=[
            ("My husband bought the hub on your website but we've changed our minds. How long "
             "after delivery can we still send it back?", ["45 days"]),
        ],
    ),
    dict(
        id="refund_timing",
        answer="Refunds are issued within 5 business days after your return arrives at our "
        "warehouse. The money goes back to your original payment method.",
        train=[
            "How long does a refund take?",
            "When will I get my money back after returning?",
            "How are refunds paid?",
            "I sent the hub back. When's my refund?",
            "How fast do you process returns?",
            "Where does my refund go?",
        ],
        eval=["After my return is received, how soon is the refund?"],
        heldout=[
            ("The courier says my return was delivered to you yesterday. How many working days "
             "until I see the credit?", ["5 business days"]),
        ],
    ),
    dict(
        id="retailer_purchase",
        answer="If you bought your Halden Hub from a store or another retailer, returns go through "
        "that retailer under their policy. The 2-year warranty still comes from Tallowmere, so "
        "contact us about defects.",
        train=[
            "I bought my hub at a store. Can I return it to you?",
            "Can I return a hub I bought on another website?",
            "Do you accept returns for retailer purchases?",
            "My hub came from an electronics store. Who handles the return?",
            "Does the warranty apply if I didn't buy from you?",
            "Return policy for third-party purchases?",
        ],
        eval=["I got my hub from a big-box store; where do I return it?"],
        heldout=[
            ("I picked the hub up at a local electronics shop, not on your site. Who do I take it "
             "back to if I want a refund?", ["retailer"]),
        ],
    ),
    dict(
        id="warranty",
        answer="Every Halden Hub has a 2-year limited warranty covering manufacturing defects. It "
        "doesn't cover water damage, drops, or other accidental damage.",
        train=[
            "How long is the warranty?",
            "What does the warranty cover?",
            "Is water damage covered?",
            "Does the hub have a warranty?",
            "Is my hub still under warranty after 18 months?",
            "What isn't covered by the warranty?",
        ],
        eval=["What's the warranty length on the hub?"],
        heldout=[
            ("My hub died after about a year and a half of light use. How long is the standard "
             "coverage period in total?", ["2-year"]),
            ("I knocked a glass over and soaked my hub. Does the standard coverage handle that "
             "kind of damage?", ["water damage"]),
        ],
    ),
    dict(
        id="halden_care",
        answer="Halden Care extends your warranty by 3 extra years for a one-time $29. You can add "
        "it within 60 days of buying your hub in Settings > Hub > Warranty.",
        train=[
            "Can I buy an extended warranty?",
            "What is Halden Care?",
            "How much is Halden Care?",
            "How long does Halden Care extend the warranty?",
            "When can I add Halden Care?",
            "Is there extra protection for the hub?",
        ],
        eval=["Tell me about the extended warranty option."],
        heldout=[
            ("Is there a paid add-on to stretch the coverage period, and what does it cost?",
             ["29"]),
            ("I bought my hub a while ago. What's the cutoff for purchasing the extended "
             "protection?", ["60 days"]),
        ],
    ),
    dict(
        id="advance_replacement",
        answer="For warranty claims we ship an advance replacement within 2 business days. We "
        "place a temporary $129 hold on your card, released once your old hub reaches us within 30 "
        "days.",
        train=[
            "How does a warranty replacement work?",
            "Do I have to send my broken hub before getting a new one?",
            "How fast will a warranty replacement ship?",
            "Why is there a hold on my card for a replacement?",
            "What is advance replacement?",
            "How long do I have to return the faulty unit?",
        ],
        eval=["My hub is defective. How quickly can I get a replacement?"],
        heldout=[
            ("Support approved my defect claim. How much will be temporarily held on my credit "
             "card during the swap?", ["129"]),
            ("Once a warranty swap is approved, how long before the new unit leaves your "
             "warehouse?", ["2 business days"]),
        ],
    ),
    # ---- shipping ---------------------------------------------------------------------------
    dict(
        id="shipping_std",
        answer="Standard shipping is free on orders over $50 and takes 3 to 5 business days. "
        "Orders under $50 pay $5.95 for standard shipping.",
        train=[
            "How much is shipping?",
            "Is shipping free?",
            "How long does standard shipping take?",
            "What's the free shipping minimum?",
            "How much does delivery cost on a small order?",
            "When will my order arrive with standard shipping?",
        ],
        eval=["What do you charge for regular delivery?"],
        heldout=[
            ("I'm only ordering a $20 replacement cable. What will the basic delivery fee be?",
             ["5.95"]),
        ],
    ),
    dict(
        id="shipping_express",
        answer="Express shipping costs $12.50 and arrives in 1 to 2 business days. Orders placed "
        "before 2 pm Mountain Time ship the same business day.",
        train=[
            "Do you offer express shipping?",
            "How much is express delivery?",
            "What's the order cutoff for same-day shipping?",
            "How fast is express shipping?",
            "Can I get my hub faster?",
            "If I order this morning, does it ship today?",
        ],
        eval=["What's the fastest shipping you have?"],
        heldout=[
            ("I need the hub for a weekend install. What does the quickest delivery option cost?",
             ["12.50"]),
            ("By what time of day must I order for it to leave the warehouse today?", ["2 pm"]),
        ],
    ),
    dict(
        id="shipping_countries",
        answer="We ship to the United States, Canada, and the United Kingdom. We don't ship to the "
        "EU or Australia yet.",
        train=[
            "Which countries do you ship to?",
            "Do you ship to Canada?",
            "Can I order from the UK?",
            "Do you deliver to Germany?",
            "Is international shipping available?",
            "Can I get a hub shipped to Australia?",
        ],
        eval=["Where do you deliver orders?"],
        heldout=[
            ("Apart from the States, which two countries can receive orders from you?",
             ["Canada", "United Kingdom"]),
        ],
    ),
    dict(
        id="tracking",
        answer="You'll get a tracking email as soon as your order ships. You can also check "
        "tracking anytime in the Halden app under Account > Orders.",
        train=[
            "How do I track my order?",
            "Where is my tracking number?",
            "Has my order shipped?",
            "How can I see my delivery status?",
            "Do you send tracking info?",
            "Where do I find my order status?",
        ],
        eval=["How can I follow my package?"],
        heldout=[
            ("I deleted my shipping email by mistake. Where in the app can I check where my "
             "parcel is?", ["Orders"]),
        ],
    ),
    # ---- contact and escalation -------------------------------------------------------------
    dict(
        id="support_hours",
        answer="Our support team is available Monday to Friday, 7 am to 7 pm Mountain Time, and "
        "Saturday 9 am to 3 pm Mountain Time. We're closed on Sundays and US federal holidays.",
        train=[
            "What are your support hours?",
            "When is customer support open?",
            "Are you open on weekends?",
            "What time zone are your hours in?",
            "Is support open on Sunday?",
            "When can I reach a human?",
        ],
        eval=["What hours can I reach support?"],
        heldout=[
            ("I work night shifts. What's the latest time on a weekday I can still reach an "
             "agent, and in which time zone?", ["7 pm", "Mountain"]),
            ("Can I get someone on the line on a Saturday afternoon? Until when?", ["3 pm"]),
            ("Is anybody around to help on Sundays?", ["closed"]),
        ],
    ),
    dict(
        id="phone",
        answer="You can call Halden support at 1-888-425-3361 during support hours. Pro members "
        "can use the priority line at 1-888-425-3399.",
        train=[
            "What's your phone number?",
            "How do I call support?",
            "Is there a number I can call?",
            "What's the priority support number?",
            "Can I phone customer service?",
            "Support phone number please.",
        ],
        eval=["Which number do I dial to talk to someone?"],
        heldout=[
            ("My mother doesn't do email. What number can she ring for help?", ["425-3361"]),
            ("As a top-tier subscriber, is there a special hotline for me? What's the number?",
             ["425-3399"]),
        ],
    ),
    dict(
        id="email",
        answer="You can email us at help@haldenhome.io. We reply within 1 business day.",
        train=[
            "What's the support email?",
            "How do I email customer service?",
            "Can I contact you by email?",
            "How fast do you answer emails?",
            "Where do I send an email for help?",
            "Email address for support?",
        ],
        eval=["Which address should I write to?"],
        heldout=[
            ("I prefer writing things down. Where do I send a message, and how long until I hear "
             "back?", ["help@haldenhome.io", "1 business day"]),
        ],
    ),
    dict(
        id="live_chat",
        answer="Live chat is in the Halden app under Settings > Help > Chat. The chat bot answers "
        "24/7, and human agents join during support hours.",
        train=[
            "Do you have live chat?",
            "Where is the chat in the app?",
            "Can I chat with someone?",
            "Is chat available 24/7?",
            "How do I start a chat with support?",
            "Is the chat a real person?",
        ],
        eval=["How do I message an agent from the app?"],
        heldout=[
            ("It's 2 in the morning and I'm stuck. Is there any way to get help through the app "
             "right now?", ["24/7"]),
        ],
    ),
    dict(
        id="escalation",
        answer="If two troubleshooting attempts haven't fixed the problem, ask the agent to "
        "escalate your case to Tier 2. Tier 2 specialists respond within 4 business hours.",
        train=[
            "How do I escalate my issue?",
            "Can I talk to a specialist?",
            "My problem isn't fixed. What now?",
            "What is Tier 2 support?",
            "How long does Tier 2 take to respond?",
            "When can I ask for escalation?",
        ],
        eval=["The basic fixes haven't worked. Can this go higher up?"],
        heldout=[
            ("I've already tried the suggested fixes twice and nothing works. Who can I get "
             "bumped up to, and how quickly will they get back to me?",
             ["Tier 2", "4 business hours"]),
        ],
    ),
    dict(
        id="case_number",
        answer="Case numbers start with HH- followed by 6 digits, for example HH-204518. You'll "
        "find yours in the confirmation email we send when a case is opened.",
        train=[
            "What does a case number look like?",
            "Where do I find my case number?",
            "What format are support case numbers?",
            "I lost my ticket number. Where is it?",
            "How do I reference my support case?",
            "Do you give ticket numbers?",
        ],
        eval=["What's the format of a support ticket ID?"],
        heldout=[
            ("An agent asked me for my reference. What letters does it begin with?", ["HH"]),
        ],
    ),
    # ---- setup and hardware -----------------------------------------------------------------
    dict(
        id="setup_requirements",
        answer="To set up the hub you need the Halden app (iOS 16 or later, Android 11 or later) "
        "and either 2.4 GHz Wi-Fi or an Ethernet cable. Networks that are 5 GHz only aren't "
        "supported.",
        train=[
            "What do I need to set up the hub?",
            "Does the hub work with 5 GHz Wi-Fi?",
            "What phone do I need for the Halden app?",
            "Can I connect the hub with Ethernet?",
            "What Android version does the app need?",
            "What are the setup requirements?",
        ],
        eval=["What's required before installing the hub?"],
        heldout=[
            ("My router only broadcasts on the faster band. Will that work, or what frequency "
             "does the hub need?", ["2.4 GHz"]),
            ("I have an old iPhone. What's the minimum operating system version your app runs "
             "on?", ["iOS 16"]),
        ],
    ),
    dict(
        id="setup_code",
        answer="The 8-digit setup code is printed on the sticker on the bottom of the hub. There's "
        "also a copy on the card inside the box.",
        train=[
            "Where is the setup code?",
            "What is the setup code for?",
            "The app asks for a code. Where do I find it?",
            "How long is the setup code?",
            "I can't find the pairing code.",
            "Where's the code to add my hub?",
        ],
        eval=["Where can I locate the hub's setup code?"],
        heldout=[
            ("The app wants some number to link the hub. Where on the device should I look?",
             ["bottom"]),
            ("How many digits should the hub's pairing code have?", ["8"]),
        ],
    ),
    dict(
        id="protocols",
        answer="The Halden Hub supports Zigbee 3.0, Z-Wave 800 Series, Thread, and Matter 1.3. "
        "That covers most smart locks, lights, sensors, and plugs.",
        train=[
            "What protocols does the hub support?",
            "Does it work with Zigbee?",
            "Is the hub Matter compatible?",
            "Does Halden support Thread?",
            "Which smart home standards work with the hub?",
            "Which Z-Wave version does it have?",
        ],
        eval=["What wireless standards are built in?"],
        heldout=[
            ("I'm an installer checking compatibility. Which Matter version is the hub certified "
             "for?", ["1.3"]),
            ("Which generation of Z-Wave chip is inside?", ["800"]),
        ],
    ),
    dict(
        id="voice",
        answer="Halden works with Amazon Alexa and Google Home through their apps. Apple Home "
        "works through Matter, so Siri can control your devices too.",
        train=[
            "Does Halden work with Alexa?",
            "Can I use Google Home with the hub?",
            "Does it work with Siri?",
            "Is Apple Home supported?",
            "Which voice assistants are compatible?",
            "Can I control the hub by voice?",
        ],
        eval=["Which voice platforms can I connect?"],
        heldout=[
            ("My household is all iPhones. How do we hook the hub into Apple's smart home app?",
             ["Matter"]),
        ],
    ),
    dict(
        id="battery_backup",
        answer="The Halden Hub has a built-in battery that keeps it running for up to 6 hours "
        "during a power outage. The Hub Mini has no battery backup.",
        train=[
            "Does the hub have a battery?",
            "What happens in a power outage?",
            "How long does the battery last?",
            "Will the hub keep working if the power goes out?",
            "Does the Mini have battery backup?",
            "Battery backup duration?",
        ],
        eval=["Can the hub survive a blackout?"],
        heldout=[
            ("We get frequent blackouts where I live. How long can the full-size hub keep going "
             "on its own?", ["6 hours"]),
        ],
    ),
    dict(
        id="power_adapter",
        answer="The hub uses a 15 W USB-C power adapter, included in the box. Any USB-C PD "
        "adapter rated 15 W or more works as a replacement.",
        train=[
            "What power adapter does the hub use?",
            "Can I use my own charger?",
            "I lost the power supply. What do I need?",
            "What wattage is the adapter?",
            "Does it use USB-C?",
            "Which replacement adapter should I buy?",
        ],
        heldout=[
            ("My dog chewed the hub's power brick. What kind of replacement, and how many watts, "
             "do I need?", ["USB-C", "15"]),
        ],
    ),
    dict(
        id="operating_temp",
        answer="The Halden Hub is for indoor use only, between 0 and 40 degrees Celsius (32 to "
        "104 degrees Fahrenheit). Keep it out of garages or attics that get hotter or colder.",
        train=[
            "Can I put the hub outside?",
            "What temperature range does the hub handle?",
            "Can the hub go in the garage?",
            "Is the hub weatherproof?",
            "What's the operating temperature?",
            "Will it work in a cold room?",
        ],
        eval=["How hot can the hub's environment get?"],
        heldout=[
            ("I want to mount it in an unheated shed. What's the highest temperature in "
             "Fahrenheit it's rated for?", ["104"]),
        ],
    ),
    dict(
        id="range",
        answer="The hub reaches about 40 feet (12 meters) indoors. Mains-powered Zigbee or Thread "
        "devices act as repeaters and extend the range.",
        train=[
            "What's the hub's range?",
            "How far can devices be from the hub?",
            "My sensor is too far away. What can I do?",
            "How do I extend the range?",
            "What's the wireless range indoors?",
            "Do I need a repeater?",
        ],
        heldout=[
            ("My garage sensor keeps dropping off. Roughly how many feet can a device be from the "
             "hub?", ["40 feet"]),
        ],
    ),
    # ---- status light -----------------------------------------------------------------------
    dict(
        id="led_teal",
        answer="A solid teal light means your hub is online and working normally. No action is "
        "needed.",
        train=[
            "What does the teal light mean?",
            "My hub light is solid teal. Is that okay?",
            "What's the normal LED color?",
            "What color is the light when everything works?",
            "The hub shows a steady teal light.",
            "Is a teal light good?",
        ],
        eval=["The light is a constant blue-green. Any problem?"],
        heldout=[
            ("How can I tell from the light on the hub that all is well? What color should it "
             "be?", ["teal"]),
        ],
    ),
    dict(
        id="led_amber",
        answer="A pulsing amber light means the hub is in setup mode and waiting to be added in "
        "the Halden app. Open the app and tap Add Hub to continue.",
        train=[
            "Why is my hub pulsing amber?",
            "What does the amber light mean?",
            "The light is orange and pulsing.",
            "What does a flashing amber LED mean?",
            "My hub light keeps pulsing yellow-orange.",
            "Amber light on the hub?",
        ],
        heldout=[
            ("There's a slow orange-ish breathing glow on my new hub. What state is it in?",
             ["setup mode"]),
        ],
    ),
    dict(
        id="led_red",
        answer="A blinking red light means the hub has lost its internet connection. Check that "
        "your router is online, then unplug the hub for 30 seconds and plug it back in.",
        train=[
            "Why is my hub blinking red?",
            "What does the red light mean?",
            "Red flashing light on the hub.",
            "My hub is blinking red. What do I do?",
            "What does a red LED mean?",
            "The light turned red and flashes.",
        ],
        eval=["The LED is flashing red; what's wrong?"],
        heldout=[
            ("The status light keeps flashing red at me. What's it trying to tell me?",
             ["internet"]),
        ],
    ),
    dict(
        id="led_purple",
        answer="A solid purple light means a firmware update is installing. Don't unplug the hub; "
        "it usually finishes within 10 minutes.",
        train=[
            "What does the purple light mean?",
            "My hub is solid purple.",
            "Why did the hub turn purple?",
            "Can I unplug the hub while it's purple?",
            "How long does the purple light last?",
            "Purple LED on the hub?",
        ],
        heldout=[
            ("The light went violet and has stayed that way. What is the hub doing?",
             ["firmware"]),
        ],
    ),
    # ---- troubleshooting --------------------------------------------------------------------
    dict(
        id="factory_reset",
        answer="To factory reset, press and hold the reset pinhole on the back for 15 seconds "
        "until the light flashes white. This erases all devices and automations, so use it as a "
        "last resort.",
        train=[
            "How do I factory reset the hub?",
            "How do I reset my Halden Hub?",
            "How long do I hold the reset button?",
            "What does a factory reset delete?",
            "Where is the reset button?",
            "How do I wipe the hub?",
        ],
        eval=["What are the steps to restore factory settings?"],
        heldout=[
            ("I'm selling my hub and want to clear everything off it. How long do I press the "
             "pinhole?", ["15 seconds"]),
            ("When wiping the hub, what color flash confirms it worked?", ["white"]),
        ],
    ),
    dict(
        id="restart",
        answer="To restart the hub, unplug it for 30 seconds and plug it back in. Your devices and "
        "automations are kept.",
        train=[
            "How do I restart the hub?",
            "Should I reboot the hub?",
            "How do I power-cycle it?",
            "Does restarting delete my settings?",
            "How long should I leave it unplugged?",
            "What's the right way to reboot?",
        ],
        heldout=[
            ("Someone told me to turn it off and on again. How long should the hub stay "
             "unplugged?", ["30 seconds"]),
        ],
    ),
    dict(
        id="e101",
        answer="Error E101 means the hub couldn't join Wi-Fi because the password was rejected. "
        "Re-enter your Wi-Fi password carefully and make sure you pick a 2.4 GHz network.",
        train=[
            "What is error E101?",
            "I'm getting E101 during setup.",
            "E101 error code?",
            "The app says E101. How do I fix it?",
            "What does E101 mean?",
            "My hub shows error E101 when connecting to Wi-Fi.",
        ],
        eval=["How do I resolve code E101?"],
        heldout=[
            ("Setup keeps failing and the app shows E101. What's the likely cause?",
             ["password"]),
        ],
    ),
    dict(
        id="e204",
        answer="Error E204 means the hub's Zigbee radio isn't responding. Unplug the hub for 30 "
        "seconds and plug it back in; if E204 returns, contact support for a replacement.",
        train=[
            "What is error E204?",
            "I see E204 in the app.",
            "How do I fix E204?",
            "What does code E204 mean?",
            "My lights stopped responding and the app shows E204.",
            "E204 keeps coming back.",
        ],
        heldout=[
            ("The app flagged E204 this morning. Which component of the hub is at fault?",
             ["Zigbee"]),
        ],
    ),
    dict(
        id="e307",
        answer="Error E307 means the hub timed out syncing with the Halden cloud. Make sure your "
        "router or firewall allows outbound traffic on port 8883.",
        train=[
            "What is error E307?",
            "Getting E307 on my hub.",
            "How do I fix E307?",
            "What does E307 mean?",
            "E307 cloud sync error?",
            "The app says E307 after I changed routers.",
        ],
        eval=["Code E307 appeared; what should I check?"],
        heldout=[
            ("I'm the IT person at our office and the hub throws E307. Which port do I need to "
             "open on the firewall?", ["8883"]),
        ],
    ),
    dict(
        id="e412",
        answer="Error E412 means you've reached your plan's device limit: 25 devices on Basic or "
        "150 on Plus. Remove unused devices or upgrade your plan to add more.",
        train=[
            "What is error E412?",
            "I can't add a device and see E412.",
            "E412 code?",
            "How do I fix E412?",
            "What does E412 mean?",
            "Why does adding a sensor give E412?",
        ],
        heldout=[
            ("I'm on the free tier and pairing one more sensor fails with E412. Why?",
             ["limit"]),
        ],
    ),
    dict(
        id="e519",
        answer="Error E519 means a firmware update failed. Hold the top button for 10 seconds to "
        "roll back to the previous firmware, then try the update again.",
        train=[
            "What is error E519?",
            "Firmware update failed with E519.",
            "How do I fix E519?",
            "E519 after an update?",
            "What does E519 mean?",
            "My hub shows E519.",
        ],
        eval=["What's E519 and how do I recover?"],
        heldout=[
            ("Last night's update didn't go through and I'm seeing E519. How do I get back to the "
             "older software?", ["top button", "10 seconds"]),
        ],
    ),
    dict(
        id="e622",
        answer="Error E622 means the hub is overheating, above 45 degrees Celsius inside. Move it "
        "to a ventilated spot out of direct sunlight and let it cool down.",
        train=[
            "What is error E622?",
            "The app says E622.",
            "How do I fix E622?",
            "What does E622 mean?",
            "Is there a hub overheating error?",
            "E622 warning on my hub.",
        ],
        heldout=[
            ("I keep the hub on a sunny windowsill and got alert E622. What's going on?",
             ["overheat"]),
        ],
    ),
    dict(
        id="e733",
        answer="Error E733 means your account is locked after 5 failed sign-in attempts. It "
        "unlocks automatically after 15 minutes, or you can reset your password right away.",
        train=[
            "What is error E733?",
            "My account is locked.",
            "I see E733 when signing in.",
            "How long does an account lock last?",
            "What does E733 mean?",
            "Too many login attempts. Now what?",
        ],
        eval=["Why can't I log in? The app shows E733."],
        heldout=[
            ("My kid kept guessing my password and now the login screen shows E733. How long "
             "until I can try again?", ["15 minutes"]),
        ],
    ),
    dict(
        id="firmware_auto",
        answer="Firmware updates install automatically at 3 am local time. You can postpone an "
        "update by up to 7 days in Settings > Hub > Updates.",
        train=[
            "When does the hub update?",
            "Are firmware updates automatic?",
            "Can I delay a firmware update?",
            "What time do updates install?",
            "How do I postpone an update?",
            "How long can I delay updates?",
        ],
        eval=["How do firmware updates get installed?"],
        heldout=[
            ("Updates happening at random times would bother me. At what hour do they normally "
             "run?", ["3 am"]),
            ("What's the maximum number of days I can push back a pending update?", ["7 days"]),
        ],
    ),
    dict(
        id="offline",
        answer="Local automations keep running without internet because they run on the hub "
        "itself. Remote access and phone notifications pause until the connection comes back.",
        train=[
            "Does the hub work without internet?",
            "What happens if my Wi-Fi goes down?",
            "Do automations run offline?",
            "Can I use the hub with no internet?",
            "Will my lights still work if the internet is out?",
            "What stops working offline?",
        ],
        eval=["If my broadband fails, what still works?"],
        heldout=[
            ("Our ISP is unreliable. When the connection drops, do my scheduled routines still "
             "fire?", ["local"]),
        ],
    ),
    # ---- privacy and security ---------------------------------------------------------------
    dict(
        id="data_retention",
        answer="When you delete your account, your data is permanently erased within 30 days. "
        "Diagnostic logs are kept for 90 days, then deleted.",
        train=[
            "How long do you keep my data?",
            "What happens to my data when I delete my account?",
            "How long are diagnostic logs stored?",
            "Do you delete my data?",
            "What's your data retention policy?",
            "When is my account data erased?",
        ],
        eval=["What happens to my information after I close my account?"],
        heldout=[
            ("I'm privacy-conscious. After I close my account, how long until everything is "
             "wiped?", ["30 days"]),
            ("How long do you hang on to troubleshooting logs from my hub?", ["90 days"]),
        ],
    ),
    dict(
        id="data_export",
        answer="Go to Settings > Account > Export My Data in the Halden app. We email you a ZIP "
        "file of JSON data within 48 hours.",
        train=[
            "How do I export my data?",
            "Can I download my data?",
            "How long does a data export take?",
            "What format is the data export?",
            "Where do I request a copy of my data?",
            "Can I get my automation history as a file?",
        ],
        heldout=[
            ("Under privacy rules I'd like a copy of everything you store on me. How long will it "
             "take to arrive?", ["48 hours"]),
        ],
    ),
    dict(
        id="two_factor",
        answer="You can turn on two-factor authentication in Settings > Account > Security using "
        "an authenticator app. SMS codes aren't supported.",
        train=[
            "Do you support two-factor authentication?",
            "How do I turn on 2FA?",
            "Can I get login codes by text?",
            "Is SMS 2FA available?",
            "How do I secure my account?",
            "Where are the security settings?",
        ],
        eval=["Can I add a second sign-in step?"],
        heldout=[
            ("I want an extra login step. Can you text me the code, or what do I need instead?",
             ["authenticator"]),
        ],
    ),
    dict(
        id="security_report",
        answer="Please report security vulnerabilities to security@haldenhome.io. Our bug bounty "
        "pays up to $5,000 for valid reports.",
        train=[
            "How do I report a security bug?",
            "Do you have a bug bounty?",
            "Where do I report a vulnerability?",
            "How much does the bug bounty pay?",
            "I found a security flaw. Who do I tell?",
            "Security contact email?",
        ],
        heldout=[
            ("I'm a researcher and found a flaw in the hub's firmware. Where should I disclose "
             "it?", ["security@haldenhome.io"]),
            ("What's the top reward for a valid vulnerability report?", ["5,000"]),
        ],
    ),
    # ---- payments and programs --------------------------------------------------------------
    dict(
        id="payment_methods",
        answer="We accept Visa, Mastercard, American Express, Discover, and PayPal. We don't "
        "accept cryptocurrency or checks.",
        train=[
            "What payment methods do you accept?",
            "Can I pay with PayPal?",
            "Do you take American Express?",
            "Can I pay with crypto?",
            "Which cards do you accept?",
            "Can I pay by check?",
        ],
        eval=["How can I pay for my order?"],
        heldout=[
            ("I don't have a credit card. Is there an online wallet option at checkout?",
             ["PayPal"]),
        ],
    ),
    dict(
        id="military_discount",
        answer="Military members, veterans, and first responders get 15% off any annual plan after "
        "a quick verification. You can apply in Settings > Subscription.",
        train=[
            "Do you have a military discount?",
            "Are there discounts for first responders?",
            "Is there a veteran discount?",
            "How much is the military discount?",
            "Do firefighters get a discount?",
            "Any discounts on annual plans?",
        ],
        heldout=[
            ("I'm a retired Marine. Is there any price break for me on a yearly subscription, and "
             "how big?", ["15%"]),
        ],
    ),
    dict(
        id="trade_in",
        answer="Trade in any other brand's smart-home hub and get $30 credit toward a Halden Hub. "
        "Start a trade-in at haldenhome.com/tradein.",
        train=[
            "Do you have a trade-in program?",
            "Can I trade in my old hub?",
            "How much is the trade-in credit?",
            "Can I get credit for my old hub from another brand?",
            "Where do I start a trade-in?",
            "Do you accept competitor hubs for credit?",
        ],
        heldout=[
            ("I'm switching over from a competitor's hub. Will you give me anything for the old "
             "one?", ["30"]),
        ],
    ),
    dict(
        id="community",
        answer="Join the Halden community forum at community.haldenhome.io. It's a great place to "
        "share automations and tips with other users.",
        train=[
            "Is there a community forum?",
            "Where can I talk to other Halden users?",
            "Do you have a user forum?",
            "Where can I find automation ideas?",
            "What's the forum address?",
            "Is there a Halden community?",
        ],
        heldout=[
            ("Where online do other owners swap tips and routines?", ["community.haldenhome.io"]),
        ],
    ),
]

GREETING = "Hi! I'm Wren, the Halden Hub support assistant. How can I help you today?"

# Questions outside the product: the house style is a short, polite redirect.
OUT_OF_SCOPE_ANSWER = (
    "I'm Wren, and I can only help with Halden Hub products, plans, and support. "
    "Is there anything about your hub I can help with?"
)
OUT_OF_SCOPE = [
    "What's the weather going to be tomorrow?",
    "Can you write me a poem about cats?",
    "Who won the football game last night?",
    "Can you help me with my math homework?",
    "What's a good recipe for lasagna?",
    "Can you recommend a good movie?",
]

# (first fact, second fact, follow-up written for the context of the first answer).
FOLLOW_UPS = [
    ("plus_price", "free_trial", "Is there a way to try it first?"),
    ("pro_price", "pro_features", "What do I get for that?"),
    ("hw_return", "refund_timing", "And once you get it back, how soon is the refund?"),
    ("warranty", "halden_care", "Can I extend that?"),
    ("warranty", "advance_replacement", "Mine is faulty. How does the replacement work?"),
    ("led_red", "restart", "How exactly do I power-cycle it?"),
    ("e519", "firmware_auto", "When do updates normally run?"),
    ("support_hours", "phone", "What number do I call?"),
    ("phone", "email", "Can I email instead?"),
    ("email", "live_chat", "Is there anything faster?"),
    ("escalation", "case_number", "What will my case number look like?"),
    ("e412", "plus_features", "How many devices would Plus give me?"),
    ("basic_limits", "plus_price", "How much is it to upgrade to Plus?"),
    ("setup_requirements", "setup_code", "The app now wants a code. Where is it?"),
    ("setup_code", "e101", "Now it says E101."),
    ("shipping_std", "shipping_express", "What if I need it sooner?"),
    ("hub_price", "mini_difference", "What's different about the Mini?"),
    ("battery_backup", "offline", "Do my automations still run during an internet outage?"),
    ("factory_reset", "restart", "Is there something less drastic I could try first?"),
    ("cancel", "sub_refund", "Can I get money back for my annual plan?"),
    ("two_factor", "e733", "I just got locked out with E733."),
    ("data_export", "data_retention", "And if I delete my account afterwards?"),
    ("protocols", "voice", "Does it also work with Alexa?"),
    ("operating_temp", "e622", "What happens if it gets too hot?"),
    ("tracking", "shipping_express", "Could I have paid for faster shipping?"),
    ("payment_methods", "military_discount", "I'm a veteran. Any discount?"),
    ("trade_in", "hub_price", "How much is the hub before the credit?"),
    ("community", "support_hours", "And if I need official support, when are you open?"),
    ("led_amber", "setup_code", "Tapped Add Hub. Where's the code it asks for?"),
    ("plans_overview", "basic_limits", "What are the limits on the free one?"),
]

# Multi-turn conversations for eval.jsonl only.
EVAL_FOLLOW_UPS = [
    ("plus_features", "plus_price", "Nice. And the price of that tier?"),
    ("e307", "escalation", "Did that already, still broken. Next step?"),
    ("shipping_countries", "shipping_express", "Great, and the quickest option?"),
    ("halden_care", "warranty", "Remind me what the standard coverage is?"),
    ("live_chat", "support_hours", "So when exactly are humans on?"),
]


# =========================================================================================
# Generation
# =========================================================================================

import argparse
import difflib
import json
import random
import re
import sys
from pathlib import Path

SEED = 20240611
OUT = Path(__file__).resolve().parent.parent / "datasets" / "support"
# Extra phrasings per fact (30 training questions, 3 validation questions with their key strings,
# 3 alternative answers that state every key verbatim), written from the answers and the topic
# list alone by writers who never saw the held-out questions. Any that still come close to a
# held-out question are dropped below (`too_close`), so the held-out set stays unseen.
PHRASINGS = Path(__file__).resolve().parent / "support_phrasings.json"
MAX_TOKENS = 200  # per conversation, ChatML-rendered, estimated conservatively below

USER_PREFIXES = ["", "", "", "", "Hi! ", "Hello. ", "Hey there! ", "Quick question: ", "Hi Wren. "]
USER_SUFFIXES = ["", "", "", "", " Thanks!", " Thank you."]
OPENERS = ["", "", "", "Happy to help! ", "Sure! ", "Good question! ", "Thanks for asking! "]
CLOSERS = ["", "", "", " Anything else I can help with?", " Let me know if you need anything else."]
CONNECTORS = ["Thanks! Also, ", "Got it. One more thing: ", "Great, thanks. ", "OK. ", "Thanks. "]


def norm(s):
    """Lowercase, collapse whitespace: the same normalisation the fact-match metric uses."""
    return " ".join(s.lower().split())


def loose(s):
    """Lowercase letters and digits only, for the train/held-out overlap check."""
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def est_tokens(messages):
    """Conservative token estimate for a ChatML rendering: SmolLM2's BPE averages ~4 characters
    per English token but splits every digit, so count digits one by one and letters at 3.5."""
    total = 3
    for m in messages:
        text = m["content"]
        digits = sum(c.isdigit() for c in text)
        total += 5 + digits + (len(text) - digits) / 3.5
    return total


def sentences(text):
    return len(re.findall(r"[.!?](?:\s|$)", text))


def decorate_answer(rng, answer):
    reply = rng.choice(OPENERS) + answer
    closer = rng.choice(CLOSERS)
    if sentences(reply + closer) <= 4:
        reply += closer
    return reply


def decorate_question(rng, q):
    return rng.choice(USER_PREFIXES) + q + rng.choice(USER_SUFFIXES)


def lower_first(q):
    # "Is there ..." -> "is there ...", but keep "I", "E101", "Pro", product names.
    first = q.split()[0]
    if first in ("I", "I'm", "I've") or not first[1:].islower() or first in ("Halden", "Pro", "Plus", "Basic"):
        return q
    return q[0].lower() + q[1:]


def convo(messages, rng, system_p):
    msgs = list(messages)
    with_sys = [{"role": "system", "content": SYSTEM}] + msgs
    if rng.random() < system_p and est_tokens(with_sys) < MAX_TOKENS:
        return {"messages": with_sys}
    return {"messages": msgs}


def turn(role, content):
    return {"role": role, "content": content}


STOP_WORDS = set(
    "a an the i my me we our you your is are was be to of in on for and or it its this that do "
    "does can could would what how when where which who why with at by from if so any there their "
    "they have has just about much many still get".split()
)


def content_words(s):
    return {w for w in re.findall(r"[a-z0-9]+", s.lower()) if w not in STOP_WORDS}


def similarity(a, b):
    """Near-paraphrase score: the larger of content-word Jaccard and difflib's character ratio."""
    wa, wb = content_words(a), content_words(b)
    jac = len(wa & wb) / max(1, len(wa | wb))
    return max(jac, difflib.SequenceMatcher(None, loose(a), loose(b)).ratio() - 0.25)


# A training or validation question this close to a held-out question is a near-paraphrase.
# (The hand-written training phrasings top out at 0.43; extra phrasings must stay below 0.35.)
NEAR = 0.45
EXTRA_NEAR = 0.35


def too_close(q, heldout_qs, limit):
    return any(similarity(q, h) >= limit for h in heldout_qs)


def load_extra(heldout_qs):
    """Extra training questions, alternative answers and validation questions per fact id, minus
    any that come close to a held-out question."""
    extra = json.loads(PHRASINGS.read_text(encoding="utf-8"))
    ids = {f["id"] for f in FACTS}
    assert set(extra) == ids, f"phrasings for unknown/missing facts: {set(extra) ^ ids}"
    dropped = 0
    for fid, x in extra.items():
        answer = next(f["answer"] for f in FACTS if f["id"] == fid)
        for k in x["keys"]:
            assert k in answer, (fid, k)
        for alt in x["answers"]:
            assert all(k in alt for k in x["keys"]), (fid, alt)
        keep = [q for q in x["questions"] if not too_close(q, heldout_qs, EXTRA_NEAR)]
        dropped += len(x["questions"]) - len(keep)
        x["questions"] = keep
        x["valid"] = [v for v in x["valid"] if not too_close(v["q"], heldout_qs, EXTRA_NEAR)]
    return extra, dropped


def build(use_extra=True, answer_variants=False):
    rng = random.Random(SEED)
    by_id = {f["id"]: f for f in FACTS}
    assert len(by_id) == len(FACTS), "duplicate fact id"
    heldout_qs = [q for f in FACTS for q, _ in f["heldout"]]
    phr, dropped = load_extra(heldout_qs)

    train, evals, heldout, valid = [], [], [], []

    # About 40 eval conversations: 35 facts keep their eval phrasing for eval.jsonl; the other
    # facts' eval phrasings become extra training phrasings.
    forced = {a for a, _, _ in EVAL_FOLLOW_UPS}
    with_eval = [f["id"] for f in FACTS if f.get("eval") and f["id"] not in forced]
    eval_ids = forced | set(rng.sample(with_eval, 35 - len(forced)))
    extra = {f["id"]: [] if f["id"] in eval_ids else f.get("eval", []) for f in FACTS}

    # Single-turn: every training phrasing once, decorated.
    for f in FACTS:
        for q in f["train"] + extra[f["id"]]:
            msgs = [turn("user", decorate_question(rng, q)), turn("assistant", decorate_answer(rng, f["answer"]))]
            train.append(convo(msgs, rng, 0.5))
    for q in OUT_OF_SCOPE:
        train.append(convo([turn("user", q), turn("assistant", OUT_OF_SCOPE_ANSWER)], rng, 0.5))

    # Multi-turn with a written follow-up.
    for a, b, follow in FOLLOW_UPS:
        q1 = rng.choice(by_id[a]["train"])
        msgs = [
            turn("user", q1),
            turn("assistant", by_id[a]["answer"]),
            turn("user", follow),
            turn("assistant", by_id[b]["answer"]),
        ]
        train.append(convo(msgs, rng, 0.3))

    # Multi-turn: two unrelated questions joined by a connector.
    ids = [f["id"] for f in FACTS]
    for _ in range(25):
        a, b = rng.sample(ids, 2)
        connector, q2 = rng.choice(CONNECTORS), rng.choice(by_id[b]["train"])
        q2 = connector + (lower_first(q2) if connector.endswith((", ", ": ")) else q2)
        msgs = [
            turn("user", rng.choice(by_id[a]["train"])),
            turn("assistant", by_id[a]["answer"]),
            turn("user", q2),
            turn("assistant", by_id[b]["answer"]),
        ]
        train.append(convo(msgs, rng, 0.3))

    # Greeting first, then a question.
    for _ in range(15):
        f = by_id[rng.choice(ids)]
        msgs = [
            turn("user", rng.choice(["Hi", "Hello", "Hey", "Hi there", "Good morning"])),
            turn("assistant", GREETING),
            turn("user", rng.choice(f["train"])),
            turn("assistant", f["answer"]),
        ]
        train.append(convo(msgs, rng, 0.3))

    # Eval: the held-back phrasings, plus a few multi-turn conversations.
    for f in FACTS:
        for q in f.get("eval", []) if f["id"] in eval_ids else []:
            evals.append(convo([turn("user", q), turn("assistant", f["answer"])], rng, 0.5))
    for a, b, follow in EVAL_FOLLOW_UPS:
        q1 = by_id[a]["eval"][0]
        msgs = [turn("user", q1), turn("assistant", by_id[a]["answer"]), turn("user", follow),
                turn("assistant", by_id[b]["answer"])]
        evals.append(convo(msgs, rng, 0.3))

    for f in FACTS:
        for q, facts in f["heldout"]:
            heldout.append({"question": q, "facts": facts, "reference": f["answer"]})
    # Validation questions: for choosing checkpoints during training, never trained on.
    for f in FACTS:
        for v in phr[f["id"]]["valid"]:
            valid.append({"question": v["q"], "facts": v["keys"], "reference": f["answer"]})

    rng.shuffle(train)
    rng.shuffle(evals)
    rng.shuffle(heldout)
    random.Random(SEED + 2).shuffle(valid)
    # The extra phrasings, from their own RNG so that eval.jsonl and heldout.jsonl (and, with
    # --no-extra, train.jsonl) stay byte-identical to the hand-written data set's. Each keeps
    # the canonical answer; with answer variants, one of it and its three rewordings.
    if use_extra:
        extra_rng = random.Random(SEED + 1)
        for f in FACTS:
            x = phr[f["id"]]
            for q in x["questions"]:
                a = extra_rng.choice([f["answer"]] + x["answers"]) if answer_variants else f["answer"]
                msgs = [turn("user", q), turn("assistant", decorate_answer(extra_rng, a))]
                train.append(convo(msgs, extra_rng, 0.5))
        extra_rng.shuffle(train)
    check(train, evals, heldout, valid)
    return train, evals, heldout, valid, dropped


def check(train, evals, heldout, valid):
    assert len(train) >= 300, len(train)
    assert 35 <= len(evals) <= 50, len(evals)
    assert len(heldout) >= 60, len(heldout)
    assert 40 <= len(FACTS) <= 60, len(FACTS)

    for c in train + evals:
        msgs = c["messages"]
        assert est_tokens(msgs) < MAX_TOKENS, (est_tokens(msgs), msgs)
        assert any(m["role"] == "assistant" for m in msgs)
        for m in msgs:
            assert m["content"].isascii() and "<|" not in m["content"], m
            if m["role"] == "assistant":
                assert 1 <= sentences(m["content"]) <= 4, m["content"]

    def users(convs):
        return [m["content"] for c in convs for m in c["messages"] if m["role"] == "user"]

    train_users = [loose(u) for u in users(train)]
    train_set = set(train_users)
    assert len({json.dumps(c) for c in train}) == len(train), "duplicate train conversation"
    # Eval phrasings are disjoint from training phrasings.
    for u in users(evals):
        if u in EVAL_ONLY_FOLLOW_UPS:
            continue
        assert loose(u) not in train_set, f"eval question also in train: {u!r}"
    # Held-out questions never appear in train, not even inside a decorated question.
    for h in heldout:
        q = loose(h["question"])
        assert q not in train_set and not any(q in u for u in train_users), h["question"]
        assert not any(u and u in q and len(u) > 25 for u in train_users), h["question"]
    # Every held-out fact is taught: it appears in a training assistant reply.
    answers = [norm(m["content"]) for c in train for m in c["messages"] if m["role"] == "assistant"]
    for h in heldout:
        assert h["facts"], h
        for fact in h["facts"]:
            assert norm(fact) in norm(h["reference"]), (fact, h["reference"])
            assert any(norm(fact) in a for a in answers), f"fact {fact!r} not taught in train"
    # No held-out question accidentally repeated.
    assert len({loose(h["question"]) for h in heldout}) == len(heldout)
    # No training or validation question is a near-paraphrase of a held-out question.
    heldout_qs = [h["question"] for h in heldout]
    for c in train:
        for m in c["messages"]:
            if m["role"] == "user":
                assert not too_close(m["content"], heldout_qs, NEAR), m["content"]
    for v in valid:
        assert not too_close(v["question"], heldout_qs, NEAR), v["question"]
        assert loose(v["question"]) not in train_set, f"validation question in train: {v}"
        for fact in v["facts"]:
            assert norm(fact) in norm(v["reference"]), (fact, v)


EVAL_ONLY_FOLLOW_UPS = {f for _, _, f in EVAL_FOLLOW_UPS}


def write_jsonl(path, rows):
    text = "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default datasets/support)")
    ap.add_argument("--no-extra", action="store_true", help="only the hand-written phrasings (the v1 data)")
    ap.add_argument("--answer-variants", action="store_true", help="reworded answers for extra phrasings")
    a = ap.parse_args()
    train, evals, heldout, valid, dropped = build(not a.no_extra, a.answer_variants)
    a.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(a.out / "train.jsonl", train)
    write_jsonl(a.out / "eval.jsonl", evals)
    write_jsonl(a.out / "heldout.jsonl", heldout)
    write_jsonl(a.out / "valid.jsonl", valid)
    n_facts = sum(len(h["facts"]) for h in heldout)
    multi = sum(1 for c in train if sum(m["role"] == "assistant" for m in c["messages"]) > 1)
    worst = max(est_tokens(c["messages"]) for c in train + evals)
    print(
        f"{len(FACTS)} facts; train {len(train)} ({multi} multi-turn), eval {len(evals)}, "
        f"heldout {len(heldout)} questions / {n_facts} facts, valid {len(valid)}; "
        f"{dropped} extra phrasings dropped as too close to a held-out question; "
        f"longest ~{worst:.0f} tokens",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
